// Test driver: runs an op list of benchmarks/web/tfjs_export.py with TensorFlow.js's wasm backend
// (benchmarks/web/tfjs_graph.mjs) and prints its outputs as JSON.
// usage: node run_tfjs_graph.mjs TFJS_GRAPH_MJS STEM THREADS INPUT.f32 SHAPE_JSON
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [graphModule, stem, threads, inputFile, shape] = process.argv.slice(2);
const { initTfjs, loadGraph } = await import(pathToFileURL(graphModule).href);
const { tf, threads: used, build } = await initTfjs(Number(threads));
const graph = loadGraph(tf, stem);
const b = readFileSync(inputFile);
const prepared = graph.prepare([{ data: new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)), shape: JSON.parse(shape) }]);
const outputs = await graph.run(prepared);
console.log(JSON.stringify({ threads: used, build, outputs: outputs.map((o) => Array.from(o)) }));
process.exit(0);  // the threaded build's pthread workers would keep the process alive
