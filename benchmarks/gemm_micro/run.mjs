// node --no-liftoff run.mjs ROUNDS a.wasm b.wasm[:splat] ...: GFLOP/s of each build/gemm_micro file at
// the shapes of shapes.json ([m, n, k]: MobileNetV2's pointwise convs as Cout x H*W x Cin, the
// encoder's and the MLP's linears, 512^3), in one V8 process alternating the files round by round.
// ":splat" turns set_gemm_load_splat on in that instance, as the JS loader does; ":m1" sets
// bench.cpp's set_mode (B packed on every run, as a pointwise conv packs its input; ":m2" packs
// and multiplies block by block as CONV2D's 1-thread pointwise path, ":m132" in 32-panel blocks). Each figure is the
// fastest of the rounds: on a shared machine the least-disturbed run is the estimate of the code's
// speed (medians move with the other processes' load). The peak line is peak_flops_chains.
import fs from "node:fs";
const [rounds, ...files] = process.argv.slice(2);
const shapes = JSON.parse(fs.readFileSync(new URL("./shapes.json", import.meta.url)));
const inst = [];
for (const spec of files) {
  const [file, ...modes] = spec.split(":");
  const module = await WebAssembly.compile(fs.readFileSync(file));
  const imports = {};  // emscripten's standalone WASI imports; never called by the benchmark
  for (const imp of WebAssembly.Module.imports(module)) (imports[imp.module] ??= {})[imp.name] = () => 0;
  const ex = (await WebAssembly.instantiate(module, imports)).exports;
  if (modes.includes("splat")) ex.set_gemm_load_splat(1);
  for (const m of modes) if (m.startsWith("m")) ex.set_mode(+m.slice(1));
  inst.push(ex);
}
const best = (a) => Math.min(...a);
const peak = (e) => { const t0 = performance.now(); const f = e.peak_flops_chains(2e6); return f / (performance.now() - t0) / 1e6; };
peak(inst[0]);
console.log("peak_flops_chains GFLOP/s", Math.max(...[0, 1, 2, 3, 4].map(() => peak(inst[0]))).toFixed(1));
for (const [m, n, k] of shapes) {
  const flops = 2 * m * n * k, reps = Math.max(1, Math.round(1e7 / flops));
  for (const e of inst) { e.setup(m, n, k); e.run(reps, 2); e.run(reps, 2); }
  const t = inst.map(() => []);
  for (let r = 0; r < +rounds; ++r)
    inst.forEach((e, i) => { const t0 = performance.now(); e.run(reps, 2); t[i].push(performance.now() - t0); });
  console.log(`${m}x${n}x${k}`.padEnd(16), t.map((x) => (flops * reps / best(x) / 1e6).toFixed(1)).join("  "));
}
