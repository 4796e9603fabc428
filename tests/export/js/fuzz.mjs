// Test driver: node fuzz.mjs <loader.mjs> <input.f32> <original.wasm> <case.wasm>... -> one JSON line
// {file: {outcome: "ran" | "error", name, message, shapesOk, sameAsOriginal}} for loading each case
// (timeoutMs 2000) and running it on <input.f32> (the input of the original's first input).
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [loaderPath, inputPath, originalPath, ...files] = process.argv.slice(2);
const { loadModel } = await import(pathToFileURL(loaderPath).href);
const b = readFileSync(inputPath);
const x = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));

async function runFile(path) {
  const model = await loadModel(readFileSync(path), { source: path, timeoutMs: 2000 });
  try {
    const spec = model.info.inputs[0];
    const outputs = await model.run(spec ? { [spec.name]: x } : {});
    const shapesOk = model.info.outputs.every((o) => outputs[o.name].length === o.shape.reduce((a, c) => a * c, 1));
    return { outputs, shapesOk };
  } finally { model.close(); }
}

const reference = (await runFile(originalPath)).outputs;
const result = {};
for (const f of files) {
  try {
    const { outputs, shapesOk } = await runFile(f);
    const same = Object.keys(reference).every((k) => outputs[k] && outputs[k].length === reference[k].length && outputs[k].every((v, i) => Object.is(v, reference[k][i])));
    result[f] = { outcome: "ran", shapesOk, sameAsOriginal: same };
  } catch (e) {
    result[f] = { outcome: "error", name: e.name, message: String(e.message).slice(0, 300) };
  }
}
console.log(JSON.stringify(result));
