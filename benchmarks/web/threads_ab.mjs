// Whole-model A/B timing of exported files in ONE Node.js process, each round taken only when the
// machine gives this process two cores: 2-thread timings on a shared machine otherwise measure its
// load more than the kernels (docs/design.md decision 2). Before and after each round a probe spins
// a JS thread and a Worker for `probe_ms` each and compares the work done with the best work one
// thread alone did: the round is kept when both probes saw >= MINCAP cores. Models run in
// alternating order (forward, then reversed), each once per round (plain run(), as a user calls it).
//
//   node benchmarks/web/threads_ab.mjs OUT.json ROUNDS MINCAP INPUTS.json label=file.wasm@threads ...
//
// INPUTS.json: [{name, dtype: "float32", shape, file}] (raw little-endian files, as compare.py's
// _write makes them). Prints per label the median, p10 and min in ms and each median's ratio to the
// first label's; writes the raw times to OUT.json. Gives up after MAXSEC (env, default 300) seconds.
// Run it at a raised priority (nice -n -15) so that the machine's other processes weigh less.
import { readFileSync, writeFileSync } from "node:fs";
import { Worker } from "node:worker_threads";

const [out, rounds, mincap, inputsJson, ...specs] = process.argv.slice(2);
const { loadModel } = await import(new URL("../../torch_wasm_backend/js/loader.mjs", import.meta.url));
const feeds = {};
for (const s of JSON.parse(readFileSync(inputsJson, "utf8"))) {
  const b = readFileSync(s.file);
  feeds[s.name] = { data: new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)), shape: s.shape };
}
const models = [];
for (const spec of specs) {
  const [label, rest] = spec.split("=");
  const [file, threads] = rest.split("@");
  models.push({ label, model: await loadModel(readFileSync(file), { threads: +threads, timeoutMs: 0 }), ms: [] });
}

const SPIN = "const spin = (ms) => { const t0 = performance.now(); let n = 0, x = 0; " +
  "while (performance.now() - t0 < ms) { for (let i = 0; i < 2000; i++) x += i * 1e-9; n++; } return n; };";
const spin = new Function(`${SPIN} return spin;`)();
const helper = new Worker(`${SPIN} const { parentPort } = require("node:worker_threads"); parentPort.on("message", (ms) => parentPort.postMessage(spin(ms)));`, { eval: true });
helper.unref();
const helperSpin = (ms) => new Promise((resolve) => { helper.once("message", resolve); helper.postMessage(ms); });
let bestAlone = 0;
/** Cores this process got: (work of two threads spinning together) / (best work of one alone). */
async function capacity(ms) {
  bestAlone = Math.max(bestAlone, spin(ms));
  const other = helperSpin(ms), mine = spin(ms);
  return (mine + await other) / bestAlone;
}

// Warm-up: V8 starts wasm in Liftoff and tiers hot functions up.
for (const m of models) { const t0 = performance.now(); while (performance.now() - t0 < 3000) await m.model.run(feeds); }
for (let i = 0; i < 20; i++) await capacity(15);
const start = performance.now(), limit = (+process.env.MAXSEC || 300) * 1000;
let kept = 0, probes = 0;
while (kept < +rounds && performance.now() - start < limit) {
  probes++;
  if (await capacity(15) < +mincap) continue;
  const order = kept % 2 ? [...models].reverse() : models, times = [];
  for (const m of order) { const t0 = performance.now(); await m.model.run(feeds); times.push([m, performance.now() - t0]); }
  if (await capacity(15) < +mincap) continue;
  kept++;
  for (const [m, ms] of times) m.ms.push(ms);
}
const pct = (v, q) => [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor(v.length * q))];
console.log(`${kept} rounds kept of ${probes} probed in ${((performance.now() - start) / 1000).toFixed(0)} s (>= ${mincap} cores)`);
if (kept) {
  const base = pct(models[0].ms, 0.5);
  for (const m of models)
    console.log(`${m.label}: median ${pct(m.ms, 0.5).toFixed(2)} ms, p10 ${pct(m.ms, 0.1).toFixed(2)}, min ${pct(m.ms, 0).toFixed(2)}; ${models[0].label} / this ${(base / pct(m.ms, 0.5)).toFixed(2)}x`);
}
writeFileSync(out, JSON.stringify({ mincap: +mincap, kept, probes, models: models.map(({ label, ms }) => ({ label, ms })) }));
for (const m of models) m.model.close();
process.exit(0);
