// One profiling process of profile_kernels.py: one model, one thread count, all three runtimes in
// this Node.js process (one V8, so the engines match), each timed per kernel by its own means:
//   ours:    Model.profile() of the shipped loader (one run_plan call per plan record, each timed
//            with performance.now() in the loader's Worker);
//   ORT-web: its session profiler (enableProfiling; node events of the JSON that endProfiling()
//            prints), on a second session of the same model, so that the timed session runs
//            without the profiler;
//   TF.js:   tf.profile's kernel times, one tf.profile per op of the op list (tfjs_graph.mjs), so
//            that each kernel is classed by the layer that issued it.
// Each runtime is warmed up alike, then rounds alternate the runtimes: a block of plain runs
// (timed from outside, as a user sees run()) and one profiled run each. Writes JSON to config.out:
// per runtime the plain run times and each profiled run's kernel entries.
// usage: node profile_kernels.mjs CONFIG.json
import fs, { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import * as ort from "onnxruntime-web";
import { initTfjs, loadGraph } from "./tfjs_graph.mjs";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { loadModel } = await import(pathToFileURL(config.loader).href);
ort.env.wasm.numThreads = config.threads;
ort.env.wasm.simd = true;

const ARRAYS = { float32: Float32Array, int64: BigInt64Array };
const read = (spec) => { const b = readFileSync(spec.file); return new ARRAYS[spec.dtype](b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)); };
const idle = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const inputs = config.inputs.map((spec) => ({ ...spec, data: read(spec) }));

// ---- ours ----
const ours = await loadModel(readFileSync(config.ours), { threads: config.threads, timeoutMs: 0 });
const ourFeeds = Object.fromEntries(inputs.map((i) => [i.name, { data: i.data, shape: i.shape }]));
const sides = {
  ours: {
    run: () => ours.run(ourFeeds),
    profile: async () => {
      const p = await ours.profile(ourFeeds);
      return { ms: p.ms, entries: p.steps.map((s) => ({ op: s.op, word: s.word, ms: s.ms })) };
    },
  },
};

// ---- ONNX Runtime Web ----
const ortOptions = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
const session = await ort.InferenceSession.create(config.onnx, ortOptions);
const profiled = await ort.InferenceSession.create(config.onnx, { ...ortOptions, enableProfiling: true });
const ortFeeds = Object.fromEntries(inputs.map((i) => [i.name, new ort.Tensor(i.dtype, i.data, i.shape)]));
const ortProfiled = [];   // wall ms of each run of the profiled session
sides.ort = {
  run: () => session.run(ortFeeds),
  // The profile itself is read at the end (endProfiling): the run's entries are filled in then.
  profile: async () => { const t0 = performance.now(); await profiled.run(ortFeeds); const entry = { ms: performance.now() - t0, entries: null }; ortProfiled.push(entry); return entry; },
};

/** ORT's profile (its wasm module prints it with fs.writeSync(1, ...) when the session ends it),
 * its node events split by run (each run's "model_run" span), in ms. */
function ortRuns() {
  const chunks = [], writeSync = fs.writeSync;
  fs.writeSync = (fd, text, ...rest) => { if (fd !== 1) return writeSync(fd, text, ...rest); chunks.push(String(text)); return text.length; };
  try { profiled.endProfiling(); } finally { fs.writeSync = writeSync; }
  const events = JSON.parse(chunks.join(""));
  const runs = events.filter((e) => e.name === "model_run").sort((a, b) => a.ts - b.ts);
  const nodes = events.filter((e) => e.cat === "Node" && e.name.endsWith("_kernel_time"));
  return runs.map((r) => nodes.filter((e) => e.ts >= r.ts && e.ts + e.dur <= r.ts + r.dur).map((e) => ({
    op: e.args.op_name, node: e.name.replace(/_kernel_time$/, ""), ms: e.dur / 1e3,
    inputs: (e.args.input_type_shape || []).map((t) => Object.values(t)[0]), outputs: (e.args.output_type_shape || []).map((t) => Object.values(t)[0]) })));
}

// ---- TensorFlow.js (wasm backend, XNNPACK) ----
let graph = null;
if (config.tfjs) {
  const { tf } = await initTfjs(config.threads);
  graph = loadGraph(tf, config.tfjs);
  const prepared = graph.prepare(inputs.map((i) => ({ data: i.data, shape: i.shape })));
  const spec = graph.graph;
  sides.tfjs = {
    run: () => graph.run(prepared),
    // The op list run op by op, each op's kernels under its own tf.profile (kernelTimeMs: the wasm
    // backend's synchronous kernel call, timed around it); then the outputs read, as run() does.
    profile: async () => {
      const t0 = performance.now();
      const v = Object.fromEntries(spec.inputs.map((s, i) => [s.name, prepared[i]]));
      const entries = [];
      for (const [index, o] of spec.ops.entries()) {
        const info = await tf.profile(() => { v[o.out] = tf.tidy(() => graph.apply(v, o)); return v[o.out]; });
        // ("name__op" entries time an op wrapper (customGrad) around kernels also listed: skipped)
        const kernels = info.kernels.filter((k) => !k.name.endsWith("__op"));
        let ms = 0;
        for (const k of kernels) ms += await k.kernelTimeMs;
        entries.push({ op: o.op, index, ms, kernels: kernels.map((k) => k.name) });
      }
      await Promise.all(spec.outputs.map((name) => v[name].data()));
      const kept = new Set(prepared);
      for (const t of Object.values(v)) if (!kept.has(t)) t.dispose();
      return { ms: performance.now() - t0, entries };
    },
  };
}

// ---- warm-up, then alternating rounds ----
const timed = async (fn) => { const t0 = performance.now(); const out = await fn(); return [performance.now() - t0, out]; };
const result = {};
for (const [name, side] of Object.entries(sides)) {
  // V8 starts wasm in Liftoff and tiers hot functions up: the same warm-up for all, plain runs and
  // (different JS around the same kernels) a few profiled ones.
  const start = performance.now();
  while (performance.now() - start < config.warmup_seconds * 1e3) await side.run();
  for (let i = 0; i < 3; i++) await side.profile();
  result[name] = { run_ms: [], profiles: [] };
}
ortProfiled.length = 0;
const skippedOrtRuns = 3;   // the profiled session's warm-up runs, also in its profile
for (let round = 0; round < config.rounds; round++) {
  for (const [name, side] of Object.entries(sides)) {
    await idle(50);   // ORT's thread pool spins a while after its runs
    for (let i = 0; i < config.runs_per_round; i++) result[name].run_ms.push((await timed(side.run))[0]);
    result[name].profiles.push(await side.profile());
  }
}
const runs = ortRuns().slice(skippedOrtRuns);
if (runs.length !== ortProfiled.length) throw new Error(`ORT's profile has ${runs.length} runs after its warm-up, ${ortProfiled.length} were profiled`);
ortProfiled.forEach((entry, i) => { entry.entries = runs[i]; });
writeFileSync(config.out, JSON.stringify({ threads: config.threads, ...result }));
ours.close();
process.exit(0);   // ORT's and TF.js's worker threads would otherwise keep the process alive
