// profile_mobilenet.py's TF.js side: tf.profile's kernel times of an op list (tfjs_graph.mjs) at 1
// thread, per kernel, classed by kind (depthwise conv, 1x1 conv, other conv, the rest); prints JSON
// [{class, ms}] with ms per run averaged over RUNS profiled runs after a 3 s warm-up.
// usage: node profile_tfjs.mjs STEM INPUT.f32 SHAPE_JSON RUNS
import { readFileSync } from "node:fs";
import { initTfjs, loadGraph } from "./tfjs_graph.mjs";

const [stem, inputFile, shape, runs] = process.argv.slice(2);
const { tf } = await initTfjs(1);
const graph = loadGraph(tf, stem);
const b = readFileSync(inputFile);
const prepared = graph.prepare([{ data: new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)), shape: JSON.parse(shape) }]);
const start = performance.now();
while (performance.now() - start < 3000) await graph.run(prepared);
const sums = new Map();
for (let i = 0; i < Number(runs); i++) {
  const profile = await tf.profile(() => graph.run(prepared));
  for (const k of profile.kernels.filter((k) => !k.name.endsWith("__op"))) {  // (the "__op" entries wrap kernels)
    const filter = k.inputShapes[1];
    const cls = k.name === "FusedDepthwiseConv2D" ? "depthwise conv" :
      k.name === "FusedConv2D" ? (filter[0] === 1 && filter[1] === 1 ? "1x1 conv" : `${filter[0]}x${filter[1]} conv`) : k.name;
    sums.set(cls, (sums.get(cls) || 0) + (await k.kernelTimeMs) / Number(runs));
  }
}
console.log(JSON.stringify([...sums].map(([cls, ms]) => ({ class: cls, ms }))));
process.exit(0);
