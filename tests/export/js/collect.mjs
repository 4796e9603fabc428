// Test driver: node --expose-gc collect.mjs <loader.mjs> <model.wasm> -> JSON {start, loaded, collected}:
// the process's thread count before, with 10 models of 3 threads loaded and run (never closed), and
// after dropping them and collecting garbage (FinalizationRegistry terminates their Workers).
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [loaderPath, modelPath] = process.argv.slice(2);
const { loadModel } = await import(pathToFileURL(loaderPath).href);
const threads = () => Number(/Threads:\s+(\d+)/.exec(readFileSync("/proc/self/status", "utf8"))[1]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const bytes = readFileSync(modelPath);
const start = threads();
let models = [];
for (let i = 0; i < 10; i++) {
  const m = await loadModel(bytes, { threads: 3 });
  const spec = m.info.inputs[0];
  await m.run({ [spec.name]: new Float32Array(spec.shape.reduce((a, b) => a * b, 1)) });
  models.push(m);
}
await sleep(200);
const loaded = threads();
models = null;
let collected = loaded;
for (let i = 0; i < 100 && collected > start + 3; i++) {
  globalThis.gc();
  await sleep(100);
  collected = threads();
}
console.log(JSON.stringify({ start, loaded, collected }));
