// Test driver: node bad_inputs.mjs <loader.mjs> <model.wasm> <file>... -> JSON {case: "ErrorName: message"}
// for wrong input names, shapes and dtypes on <model.wasm>, and for loading each extra <file>.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [loaderPath, modelPath, ...files] = process.argv.slice(2);
const { loadModel } = await import(pathToFileURL(loaderPath).href);
const result = {};
async function attempt(name, fn) {
  try { await fn(); result[name] = "no error"; } catch (e) { result[name] = `${e.name}: ${e.message}`; }
}
const model = await loadModel(readFileSync(modelPath), { threads: 1 });
const spec = model.info.inputs[0];
const n = spec.shape.reduce((a, b) => a * b, 1);
await attempt("wrong_name", () => model.run({ nope: new Float32Array(n) }));
await attempt("missing", () => model.run({}));
await attempt("wrong_length", () => model.run({ [spec.name]: new Float32Array(n + 1) }));
await attempt("wrong_shape", () => model.run({ [spec.name]: { data: new Float32Array(n), shape: [n] } }));
await attempt("wrong_dtype", () => model.run({ [spec.name]: new Float64Array(n) }));
await attempt("plain_array", () => model.run({ [spec.name]: Array(n).fill(0) }));
model.close();
for (const f of files) await attempt(f, () => loadModel(readFileSync(f), { source: f }));
console.log(JSON.stringify(result));
