// One timing process of benchmarks/web/compare.py: for one thread count, runs every model with
// ONNX Runtime Web (wasm backend, SIMD; numThreads is per process, hence one process per count),
// TensorFlow.js's wasm backend (XNNPACK; the op list tfjs_export.py wrote, see tfjs_graph.mjs) and
// our exported .wasm through the shipped loader (with one_thread_too, each also at 1 thread),
// alternating, and prints JSON results: each runtime's max |output - eager| per output, its
// warm-up, its times (median, quartiles, min, max) and, for models with a dynamic dim, its first
// run at each length never run before next to its steady time there, as JSON into the file
// config.out. A model's "ours" and "onnx" map side names to files (the float table: ours,
// ours_relaxed / ort; the int8 table: ours, ours_int8 / ort, ort_int8); with "save_outputs" each
// side's first outputs are also written to raw files there, for compare.py to check against each
// side's own reference.
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import * as ort from "onnxruntime-web";
import { initTfjs, loadGraph } from "./tfjs_graph.mjs";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const loaderUrl = pathToFileURL(config.loader);
const { loadModel } = await import(loaderUrl.href);
const { Engine, parseFile } = await import(new URL("./core.mjs", loaderUrl).href);
ort.env.wasm.numThreads = config.threads;
ort.env.wasm.simd = true;
// TF.js's backend is set up once per process (its thread count is fixed at initialization).
let tfjs = null, tfjsError = null;
try { tfjs = await initTfjs(config.threads); } catch (e) { tfjsError = String(e && e.message ? e.message : e); }

const ARRAYS = { float32: Float32Array, int64: BigInt64Array };
const read = (spec) => { const b = readFileSync(spec.file); return new ARRAYS[spec.dtype](b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)); };
const quantile = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];
const median = (xs) => quantile(xs, 0.5);

/** Run functions of every side (each ORT-web session, TF.js if `graph`, each of our loaded files) on
 * one set of inputs; each resolves to {output name: typed array} (TF.js's outputs come in the order of
 * `outputs`). */
function runners(sessions, ours, graph, inputs, outputs) {
  const ortFeeds = {}, ourFeeds = {};
  for (const spec of inputs) {
    const data = read(spec);
    ortFeeds[spec.name] = new ort.Tensor(spec.dtype, data, spec.shape);
    ourFeeds[spec.name] = { data, shape: spec.shape };
  }
  // ORT's outputs are Tensors, ours typed arrays: both have .data
  const dataOf = (outs) => Object.fromEntries(Object.entries(outs).map(([k, v]) => [k, v.data]));
  const run = {};
  for (const [side, session] of Object.entries(sessions)) run[side] = async () => dataOf(await session.run(ortFeeds));
  for (const [side, model] of Object.entries(ours)) run[side] = async () => dataOf(await model.run(ourFeeds));
  if (graph) {  // TF.js: input tensors made once (NCHW -> NHWC), as ORT's Tensors are; outputs in order
    const prepared = graph.prepare(inputs.map((spec) => ({ data: read(spec), shape: spec.shape })));
    run.tfjs = async () => Object.fromEntries((await graph.run(prepared)).map((d, i) => [outputs[i].name, d]));
    run.tfjs.dispose = () => prepared.forEach((t) => t.dispose());
  }
  return run;
}

/** max |got - expected| per output, keyed `name` (or `name@length` for a new length). */
function maxDiffs(got, outputs, suffix = "") {
  const diffs = {};
  for (const spec of outputs) {
    const want = read(spec), have = got[spec.name];
    if (!have || have.length !== want.length) throw new Error(`output ${spec.name}${suffix}: ${have ? have.length : "no"} values, eager has ${want.length}`);
    let m = 0;
    for (let i = 0; i < want.length; i++) m = Math.max(m, Math.abs(have[i] - want[i]));
    diffs[spec.name + suffix] = m;
  }
  return diffs;
}

async function timed(fn) {
  const t0 = performance.now();
  const out = await fn();
  return [performance.now() - t0, out];
}

// V8 compiles wasm functions with its baseline compiler (Liftoff) at first and tiers hot ones up to
// TurboFan in the background, so the first runs are slower. Every runtime gets the same warm-up:
// at least warmup_seconds of runs, then until the last 5 are within 10% of each other (for at most
// max_warmup_seconds in all); how many runs and seconds that took is reported.
async function warmUp(fn, firstMs) {
  const times = [firstMs];
  const start = performance.now() - firstMs, elapsed = () => (performance.now() - start) / 1e3;
  const settled = () => { const last = times.slice(-5); return last.length === 5 && Math.max(...last) <= 1.1 * Math.min(...last); };
  while (elapsed() < config.warmup_seconds || (!settled() && elapsed() < config.max_warmup_seconds))
    times.push((await timed(fn))[0]);
  return { first_ms: firstMs, runs: times.length, settled: settled(), seconds: elapsed(), times_ms: times };
}

/** One round's block of runs of one side: at least min_iters, and round_seconds long. */
async function block(fn) {
  const times = [];
  const start = performance.now();
  while (times.length < config.min_iters || (performance.now() - start < config.round_seconds * 1000 && times.length < config.max_iters))
    times.push((await timed(fn))[0]);
  return times;
}

const stats = (times) => ({ median_ms: median(times), p25_ms: quantile(times, 0.25), p75_ms: quantile(times, 0.75),
                            min_ms: Math.min(...times), max_ms: Math.max(...times), iters: times.length });

const idle = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The first run at a size never run before, then new_length_iters more: the extra cost of a new size.
 * It starts after 100 ms idle: ORT's thread pool spins a while after its runs, which would slow down
 * a first run of ours right after them (and ours after ORT's). */
async function newSize(fn, outputs, suffix) {
  await idle(100);
  const [first, out] = await timed(fn);
  const steady = [];
  for (let i = 0; i < config.new_length_iters; i++) steady.push((await timed(fn))[0]);
  return { first_ms: first, steady_ms: median(steady), steady_min_ms: Math.min(...steady), steady_max_ms: Math.max(...steady), diffs: maxDiffs(out, outputs, suffix) };
}

/** Our planning for a new size alone: Engine.sizesFor (what run() calls for input shapes it has not
 * seen: evaluate the size programs, patch the plan words, check the views) on the file's metadata and
 * plan, in this thread. Five passes over the new lengths, each pass with an empty cache of sizes;
 * the first call of all runs cold (V8's interpreter), as in a page's first new length. */
function planning(bytes, m) {
  const file = parseFile(bytes, m.name), plan = file.custom.get("twb.plan");
  const words = new Int32Array(plan.buffer.slice(plan.byteOffset, plan.byteOffset + plan.byteLength));
  const shapes = m.new_lengths.map((n) => file.meta.inputs.map((spec) => n.inputs.find((i) => i.name === spec.name).shape));
  const passes = [];
  for (let pass = 0; pass < 5; pass++) {
    const engine = { meta: file.meta, plan: words, sizes: new Map(), source: m.name };
    passes.push(shapes.map((s) => { const t0 = performance.now(); Engine.prototype.sizesFor.call(engine, s); return performance.now() - t0; }));
  }
  return { cold_ms: passes[0][0], ms: shapes.map((_, k) => median(passes.slice(1).map((p) => p[k]))) };
}

const results = [];
const tfjsInfo = tfjs ? { threads: tfjs.threads, build: tfjs.build, version: tfjs.tf.version_core } : { error: tfjsError };
for (const m of config.models) {
  const sessions = {}, ours = {};
  for (const [side, file] of Object.entries(m.onnx))
    sessions[side] = await ort.InferenceSession.create(file, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  for (const [side, file] of Object.entries(m.ours)) ours[side] = await loadModel(readFileSync(file), { threads: config.threads, timeoutMs: 0 });
  // Our 2-thread speedup from one process: each of our files also at 1 thread (side `<side>_1t`),
  // alternating with the rest, so that a noisy neighbour who comes and goes between the 1- and the
  // 2-thread processes does not make up (or hide) a speedup.
  if (config.threads > 1 && config.one_thread_too)
    for (const [side, file] of Object.entries(m.ours)) ours[`${side}_1t`] = await loadModel(readFileSync(file), { threads: 1, timeoutMs: 0 });
  const graph = tfjs && m.tfjs ? loadGraph(tfjs.tf, m.tfjs) : null;
  const sides = [...Object.keys(ours), ...Object.keys(sessions), ...(graph ? ["tfjs"] : [])];
  const run = runners(sessions, ours, graph, m.inputs, m.outputs);
  const diffs = Object.fromEntries(sides.map((side) => [side, {}])), warmup = {};
  for (const side of sides) {
    const [first, out] = await timed(run[side]);
    Object.assign(diffs[side], maxDiffs(out, m.outputs));
    if (m.save_outputs)
      for (const [name, data] of Object.entries(out))
        writeFileSync(`${m.save_outputs}.${config.threads}.${side}.${name}.bin`, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    warmup[side] = await warmUp(run[side], first);
  }
  // Alternate the sides, round by round, so that a noisy neighbour on the machine hits all alike;
  // 50 ms idle before each block: ORT's thread pool spins a while after its runs.
  const times = Object.fromEntries(sides.map((side) => [side, []]));
  for (let round = 0; round < config.rounds; round++) for (const side of sides) { await idle(50); times[side].push(...(await block(run[side]))); }
  const newLengths = [];
  for (const n of m.new_lengths) {
    const at = runners(sessions, ours, null, n.inputs, n.outputs), entry = { length: n.length };
    // (not the 1-thread copies of the 2-thread process: the 1-thread process times new lengths at 1
    // thread, and each costs a first run plus new_length_iters more, ~1 s each on BERT-base)
    for (const side of sides.filter((s) => at[s] && !s.endsWith("_1t"))) {
      entry[side] = await newSize(at[side], n.outputs, `@${n.length}`);
      Object.assign(diffs[side], entry[side].diffs);
    }
    newLengths.push(entry);
  }
  results.push({ model: m.name, threads: config.threads, ...Object.fromEntries(sides.map((side) => [side, stats(times[side])])),
                 max_abs_diff: diffs, warmup, new_lengths: newLengths, planning_ms: m.new_lengths.length ? planning(readFileSync(m.ours.ours), m) : null,
                 tfjs_info: tfjsInfo });
  for (const model of Object.values(ours)) model.close();
  if (graph) { run.tfjs.dispose(); graph.dispose(); }
  for (const session of Object.values(sessions)) await session.release();
}
// To a file: stdout to a pipe is written asynchronously, and process.exit would cut it at 64 kB.
writeFileSync(config.out, JSON.stringify(results));
process.exit(0);  // ORT's and TF.js's worker threads would otherwise keep the process alive
