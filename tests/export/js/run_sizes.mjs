// Test driver: node run_sizes.mjs <loader.mjs> <model.wasm> <threads> <runs.json> -> prints one JSON line
// {"runs": [{name: {shape, data}} | {"error": "Name: message"}, ...]}. runs.json is a list of runs, each
// {input name: {dtype, shape, data: [numbers]}}; int64 inputs are passed as BigInt64Array (or as
// Int32Array when dtype is "int32-for-int64"), bool as Uint8Array. Outputs' data come back as numbers.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [loaderPath, modelPath, threads, runsPath] = process.argv.slice(2);
const { loadModel } = await import(pathToFileURL(loaderPath).href);
const model = await loadModel(readFileSync(modelPath), { threads: Number(threads), source: modelPath });
const typed = {
  float32: (d) => Float32Array.from(d), int32: (d) => Int32Array.from(d), bool: (d) => Uint8Array.from(d),
  int64: (d) => BigInt64Array.from(d, (v) => BigInt(v)), "int32-for-int64": (d) => Int32Array.from(d),
};
const results = [];
for (const run of JSON.parse(readFileSync(runsPath, "utf8"))) {
  const inputs = {};
  for (const [name, t] of Object.entries(run)) inputs[name] = { data: typed[t.dtype](t.data), shape: t.shape };
  try {
    const outputs = await model.run(inputs);
    results.push(Object.fromEntries(Object.entries(outputs).map(([name, a]) => [name, { shape: a.shape, data: Array.from(a, Number) }])));
  } catch (e) {
    results.push({ error: `${e.name}: ${e.message}` });
  }
}
model.close();
console.log(JSON.stringify({ runs: results }));
