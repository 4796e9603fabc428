// One fresh process of benchmarks/warmup/time_to_steady.py: loads an exported .wasm with the shipped
// loader (warmUp on or off) and prints JSON: load time, the warm-up's share of it, and the time of
// each of the first N runs. Inputs are fixed non-zero values (the numbers do not matter: the run
// time of these models does not depend on them).
//   node [--no-liftoff] first_runs.mjs LOADER_PATH FILE.wasm N true|false
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [loader, file, n, warmUp] = process.argv.slice(2);
const { loadModel } = await import(pathToFileURL(loader).href);
const bytes = readFileSync(file);
const start = performance.now();
const model = await loadModel(bytes, { threads: 1, timeoutMs: 0, warmUp: warmUp === "true" });
const loadMs = performance.now() - start;
const inputs = {};
for (const spec of model.info.inputs) inputs[spec.name] = new Float32Array(spec.shape.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i));
const runs = [];
for (let i = 0; i < Number(n); i++) {
  const t = performance.now();
  await model.run(inputs);
  runs.push(performance.now() - t);
}
model.close();
console.log(JSON.stringify({ load_ms: loadMs, warm_up_ms: model.info.warmUpMs, runs_ms: runs }));
