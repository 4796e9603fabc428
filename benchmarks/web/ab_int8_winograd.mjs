// ab_int8_winograd.py's timing process: node ab_int8_winograd.mjs LOADER DIR ROUNDS 64x56,128x28,...
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import * as ort from "onnxruntime-web";

const [loader, dir, roundsArg, layersArg] = process.argv.slice(2);
const rounds = +roundsArg;
const { loadModel } = await import(pathToFileURL(loader).href);
ort.env.wasm.numThreads = 1;
ort.env.wasm.simd = true;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ratio = (a, b) => median(a.map((x, i) => x / b[i])).toFixed(3);
const maxDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const ours = async (file) => loadModel(readFileSync(`${dir}/${file}`), { threads: 1, timeoutMs: 0 });

// ResNet-18: four sides alternating (warm-up: 10 runs each)
const xb = readFileSync(`${dir}/x.bin`);
const x = new Float32Array(xb.buffer.slice(xb.byteOffset, xb.byteOffset + xb.byteLength));
const shape = [1, 3, 224, 224];
const run = {};
for (const side of ["int8_wino", "int8_plain", "f32"]) {
  const m = await ours(`${side}.wasm`);
  run[side] = async () => Object.values(await m.run({ input: { data: x, shape } }))[0];
}
const session = await ort.InferenceSession.create(`${dir}/ort_int8.onnx`, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
const feeds = { input: new ort.Tensor("float32", x, shape) };
run.ort_int8 = async () => Object.values(await session.run(feeds))[0].data;
const first = {};
for (const [side, f] of Object.entries(run)) for (let i = 0; i < 10; ++i) first[side] = await f();
console.log(`ResNet-18 int8: max |winograd - plain| = ${maxDiff(first.int8_wino, first.int8_plain)}`);
const t = Object.fromEntries(Object.keys(run).map((k) => [k, []]));
for (let r = 0; r < rounds; ++r)
  for (const [side, f] of Object.entries(run)) { const s = performance.now(); await f(); t[side].push(performance.now() - s); }
for (const side of Object.keys(t)) console.log(`  ${side}: median ${median(t[side]).toFixed(1)} ms`);
for (const other of ["int8_plain", "f32", "ort_int8"]) console.log(`  int8_wino / ${other}: ${ratio(t.int8_wino, t[other])}`);
console.log(`  int8_plain / ort_int8: ${ratio(t.int8_plain, t.ort_int8)}`);

// one conv per shape: the conv record's time (Model.profile), winograd / plain
for (const layer of layersArg.split(",")) {
  const [c, hw] = layer.split("x").map(Number);
  const data = new Float32Array(c * hw * hw).map((_, i) => Math.sin(i * 0.37));
  const f = { input: { data, shape: [1, c, hw, hw] } };
  const ms = [await ours(`conv${c}_wino.wasm`), await ours(`conv${c}_plain.wasm`)];
  const outs = [];
  for (const m of ms) { let o; for (let i = 0; i < 5; ++i) o = await m.run(f); outs.push(Object.values(o)[0]); }
  const tl = [[], []];
  for (let r = 0; r < rounds; ++r)
    for (let i = 0; i < 2; ++i) {
      const p = await ms[i].profile(f);
      tl[i].push(p.steps.filter((s) => s.op.startsWith("QCONV2D")).reduce((a, s) => a + s.ms, 0));
    }
  console.log(`conv ${c}x${hw}x${hw}: winograd ${median(tl[0]).toFixed(2)} ms, plain ${median(tl[1]).toFixed(2)} ms, ` +
              `ratio ${ratio(tl[0], tl[1])}, max |diff| ${maxDiff(outs[0], outs[1])}`);
}
