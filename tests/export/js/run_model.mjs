// Test driver: node run_model.mjs <loader.mjs> <model.wasm> <threads> <out_dir> [--warm-up=false]
// <name=in.f32>... -> writes <out_dir>/<output name>.f32 for each output (its raw bytes, whatever its
// dtype); prints {"info": {...}, "outputs": {name: path}, "types": {name: typed array class}}.
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [loaderPath, modelPath, threads, outDir, ...args] = process.argv.slice(2);
const options = { threads: Number(threads), source: modelPath };
if (args[0] && args[0].startsWith("--warm-up=")) options.warmUp = args.shift() === "--warm-up=true";
const inputArgs = args;
const { loadModel } = await import(pathToFileURL(loaderPath).href);
const model = await loadModel(readFileSync(modelPath), options);
const inputs = {};
for (const arg of inputArgs) {
  const [name, file] = arg.split("=");
  const b = readFileSync(file);
  inputs[name] = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}
const outputs = await model.run(inputs);
const again = await model.run(inputs);  // a second run on the same memory gives the same numbers
const written = {}, types = {};
for (const [name, arr] of Object.entries(outputs)) {
  types[name] = arr.constructor.name;
  if (again[name].some((v, i) => !Object.is(v, arr[i]))) throw new Error(`second run differs for ${name}`);
  written[name] = `${outDir}/${name}.f32`;
  writeFileSync(written[name], Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength));
}
model.close();
console.log(JSON.stringify({ info: { threads: model.info.threads, inputs: model.info.inputs.map((i) => i.name), warmUpMs: model.info.warmUpMs }, outputs: written, types }));
