// One timing process of benchmarks/ort_web/compare.py: for one thread count, runs every model with
// ONNX Runtime Web (wasm backend, SIMD; numThreads is per process, hence one process per count) and
// with our exported .wasm through the shipped loader, alternating, and prints JSON results.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import * as ort from "onnxruntime-web";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { loadModel } = await import(pathToFileURL(config.loader).href);
ort.env.wasm.numThreads = config.threads;
ort.env.wasm.simd = true;

const readF32 = (f) => { const b = readFileSync(f); return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)); };
const maxDiff = (a, b) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m; };

async function time(fn) {
  for (let i = 0; i < config.warmup; i++) await fn();
  const times = [];
  const start = performance.now();
  while (times.length < config.min_iters || (performance.now() - start < config.min_seconds * 1000 && times.length < config.max_iters)) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { median_ms: times[times.length >> 1], min_ms: times[0], iters: times.length };
}

const results = [];
for (const m of config.models) {
  const x = readF32(m.input), expected = readF32(m.expected);
  const session = await ort.InferenceSession.create(m.onnx, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", x, m.shape) };
  const ortOut = async () => (await session.run(feeds))[session.outputNames[0]].data;
  const ours = await loadModel(readFileSync(m.ours), { threads: config.threads });
  const oursOut = async () => (await ours.run({ [m.input_name]: x })).output;
  const ortDiff = maxDiff(await ortOut(), expected), oursDiff = maxDiff(await oursOut(), expected);
  // Alternate the two so that a noisy neighbour on the machine hits both alike.
  const ortT = [], oursT = [];
  for (let round = 0; round < config.rounds; round++) { ortT.push(await time(ortOut)); oursT.push(await time(oursOut)); }
  const best = (ts) => ts.reduce((a, b) => (b.median_ms < a.median_ms ? b : a));
  results.push({ model: m.name, threads: config.threads, ort: best(ortT), ours: best(oursT), ort_max_abs_diff: ortDiff, ours_max_abs_diff: oursDiff });
  ours.close();
  await session.release();
}
console.log(JSON.stringify(results));
process.exit(0);  // ORT's worker threads would otherwise keep the process alive
