// Test driver: node profile_model.mjs <loader.mjs> <model.wasm> <threads> <out.f32> <runs> <name=in.f32>
// -> Model.profile() `runs` times; checks each profiled run's outputs equal run()'s bit for bit, writes
// the first output (float32) to out.f32; prints {"profiles": [{steps, ms}, ...]}.
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [loaderPath, modelPath, threads, outFile, runs, input] = process.argv.slice(2);
const { loadModel } = await import(pathToFileURL(loaderPath).href);
const model = await loadModel(readFileSync(modelPath), { threads: Number(threads), source: modelPath });
const [name, file] = input.split("=");
const b = readFileSync(file);
const inputs = { [name]: new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)) };
const plain = await model.run(inputs);
const profiles = [];
for (let i = 0; i < Number(runs); i++) {
  const { outputs, steps, ms } = await model.profile(inputs);
  for (const [key, arr] of Object.entries(plain))
    if (outputs[key].length !== arr.length || outputs[key].some((v, j) => !Object.is(v, arr[j]))) throw new Error(`profile()'s ${key} differs from run()'s`);
  profiles.push({ steps, ms });
}
const first = Object.values(plain)[0];
writeFileSync(outFile, Buffer.from(first.buffer, first.byteOffset, first.byteLength));
model.close();
console.log(JSON.stringify({ profiles }));
