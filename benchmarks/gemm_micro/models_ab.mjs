// node benchmarks/gemm_micro/models_ab.mjs ROUNDS THREADS a.wasm b.wasm [...]: whole exported models
// (export_models.py) in ONE Node.js process, default V8 flags, loaded through the JS loader (which
// warms each up at load) and run 3 s more alternating before timing; then ROUNDS rounds of 3 runs of
// each file, the order rotating each round. Prints, per file, the median wall time and the median
// process CPU time of a run (user + system of the whole process: the model runs on the loader's
// worker thread while the main thread waits, so on a shared machine the CPU time leaves out the time
// the thread sat descheduled), each as a ratio to the first file, and whether outputs are
// bit-identical to the first file's on the same seeded random input.
import { readFileSync } from "node:fs";
const { loadModel } = await import(new URL("../../torch_wasm_backend/js/loader.mjs", import.meta.url).href);
const [rounds, threads, ...files] = process.argv.slice(2);
const models = [];
for (const f of files) models.push(await loadModel(readFileSync(f), { threads: +threads, timeoutMs: 0 }));
let seed = 1;
const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
const feeds = {};
for (const spec of models[0].info.inputs) {
  const d = new Float32Array(spec.shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < d.length; ++i) d[i] = rnd();
  feeds[spec.name] = { data: d, shape: spec.shape };
}
const outs = [];
for (const m of models) outs.push(await m.run(feeds));
for (let i = 1; i < models.length; ++i) {
  let maxDiff = 0, same = true;
  for (const k of Object.keys(outs[0])) {
    const a = outs[0][k].data ?? outs[0][k], b = outs[i][k].data ?? outs[i][k];
    for (let j = 0; j < a.length; ++j) {
      if (Object.is(a[j], b[j])) continue;
      same = false;
      maxDiff = Math.max(maxDiff, Math.abs(a[j] - b[j]));
    }
  }
  console.log(`${files[i]} vs ${files[0]}: bit-identical ${same}, max |diff| ${maxDiff}`);
}
const t0 = performance.now();
while (performance.now() - t0 < 3000) for (const m of models) await m.run(feeds);
const wall = models.map(() => []), cpu = models.map(() => []);
for (let r = 0; r < +rounds; ++r)
  for (let j = 0; j < models.length; ++j) {
    const i = (j + r) % models.length;
    for (let q = 0; q < 3; ++q) {
      const c = process.cpuUsage(), s = performance.now();
      await models[i].run(feeds);
      wall[i].push(performance.now() - s);
      const d = process.cpuUsage(c);
      cpu[i].push((d.user + d.system) / 1000);
    }
  }
const med = (x) => [...x].sort((a, b) => a - b)[x.length >> 1];
files.forEach((f, i) => console.log(f.padEnd(40), `wall median ${med(wall[i]).toFixed(2)} ms (x${(med(wall[i]) / med(wall[0])).toFixed(3)})`,
  `| cpu median ${med(cpu[i]).toFixed(2)} ms (x${(med(cpu[i]) / med(cpu[0])).toFixed(3)})`));
for (const m of models) m.close();
