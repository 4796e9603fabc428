// Runs an op list written by tfjs_export.py with TensorFlow.js's wasm backend (XNNPACK kernels):
// the TF.js side of compare.py's web benchmark. Convolutions and linears run as tf.fused ops
// (bias and relu/relu6 fused, as TF.js's converter emits them); the activations TF.js has no op
// for are composed of its ops the way a converted Keras graph computes them.
import { readFileSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/**
 * tfjs-backend-wasm's threaded build in Node.js. The backend never picks it there
 * (WASM_HAS_MULTITHREAD_SUPPORT is hard-wired false under Node), and its pthread workers are
 * started from Blob URLs, which Node's worker_threads cannot load. The shim: the flag is set true,
 * and while the backend initializes, Blob + URL.createObjectURL are replaced by ones that write
 * the script to a temporary file and hand out its path (the worker gets the same createObjectURL
 * for the main script it is sent). Emscripten's build itself runs its pthreads on worker_threads.
 * And: the backend clamps the thread count to half the logical cores it sees (it takes them for
 * hyperthreads: XNNPACK's pool = min(setThreadsCount, logical cores / 2), read from the wasm), so on
 * this 2-core VM it would run 1 thread whatever it is told, in a browser too. To measure its 2-thread
 * speed (what it runs on a 2-core, 4-hyperthread machine) os.cpus() reports 2 x `threads` cores
 * while it initializes.
 */
function installThreadShim(threads) {
  const dir = mkdtempSync(join(tmpdir(), "tfjs-wasm-threads-"));
  let n = 0;
  const saved = { Blob: globalThis.Blob, createObjectURL: URL.createObjectURL };
  // The worker side: a plain {tfjsShimPath} object arrives instead of a Blob (structured clone).
  // The main script sent there is the factory's source text out of the 4.22.0 Node bundle, which
  // names the Node modules it uses by the bundle's top-level variables (tf-backend-wasm.node.js).
  const prelude = "URL.createObjectURL = (b) => b.tfjsShimPath; URL.revokeObjectURL = () => {};\n" +
    "var require$$0 = require('fs'), require$$1 = require('path'), require$$3 = require('perf_hooks'), require$$4 = require('os'), commonjsGlobal = globalThis;\n";
  globalThis.Blob = class {
    constructor(parts) {
      this.tfjsShimPath = join(dir, `script${n++}.cjs`);
      writeFileSync(this.tfjsShimPath, prelude + parts.join(""));
    }
  };
  URL.createObjectURL = (blob) => blob.tfjsShimPath;
  const os = require("node:os"), cpus = os.cpus;
  os.cpus = () => Array.from({ length: 2 * threads }, (_, i) => cpus()[i % cpus().length]);
  return () => { globalThis.Blob = saved.Blob; URL.createObjectURL = saved.createObjectURL; os.cpus = cpus; };
}

/** Sets up tf with the wasm backend at `threads` threads; returns { tf, threads, build }. */
export async function initTfjs(threads) {
  const tf = require("@tensorflow/tfjs-core");
  const wasm = require("@tensorflow/tfjs-backend-wasm");
  wasm.setWasmPaths(join(dirname(require.resolve("@tensorflow/tfjs-backend-wasm")), "/"));
  let restore = () => {};
  if (threads > 1) {
    tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", true);
    wasm.setThreadsCount(threads);
    restore = installThreadShim(threads);
  }
  try {
    if (!(await tf.setBackend("wasm"))) throw new Error("tf.setBackend('wasm') failed (see the message above)");
    await tf.ready();
  } finally {
    restore();
  }
  const build = threads > 1 ? "threaded-simd build via a worker_threads shim" : "simd build";
  return { tf, threads: wasm.getThreadsCount(), build };
}

const SQRT1_2 = Math.SQRT1_2;

/** The op list at `stem`.tfjs.json with its weights; returns { run(inputs) } where inputs are
 * [{ data, shape }] in PyTorch's layout (in graph order) and run resolves to the outputs' data
 * (PyTorch layout) in graph order. Inputs are converted (NCHW -> NHWC) once, by prepare(). */
export function loadGraph(tf, stem) {
  const graph = JSON.parse(readFileSync(`${stem}.tfjs.json`, "utf8"));
  const blob = readFileSync(`${stem}.tfjs.bin`);
  const weights = {};
  for (const [name, { offset, shape }] of Object.entries(graph.weights)) {
    const n = shape.reduce((a, b) => a * b, 1);
    weights[name] = tf.tensor(new Float32Array(blob.buffer.slice(blob.byteOffset + offset, blob.byteOffset + offset + 4 * n)), shape);
  }
  const scalars = new Map();
  const scalar = (v) => { if (!scalars.has(v)) scalars.set(v, tf.keep(tf.scalar(v))); return scalars.get(v); };
  const pad = (p) => (p[0] === 0 && p[1] === 0 ? "valid" : p[0] === p[1] ? p[0] : [[0, 0], [p[0], p[0]], [p[1], p[1]], [0, 0]]);
  const UNARY = {
    relu: (x) => tf.relu(x),
    relu6: (x) => tf.relu6(x),
    sigmoid: (x) => tf.sigmoid(x),
    silu: (x) => tf.mul(x, tf.sigmoid(x)),
    hardswish: (x) => tf.mul(x, tf.mul(tf.relu6(tf.add(x, scalar(3))), scalar(1 / 6))),
    hardsigmoid: (x) => tf.mul(tf.relu6(tf.add(x, scalar(3))), scalar(1 / 6)),
    gelu: (x) => tf.mul(tf.mul(x, scalar(0.5)), tf.add(scalar(1), tf.erf(tf.mul(x, scalar(SQRT1_2))))),
  };
  const OPS = {
    conv: (v, o) => {
      const args = { x: v[o.x], filter: weights[o.w], bias: weights[o.b], strides: o.stride, pad: pad(o.pad),
                     dilations: o.dilation, activation: o.act };
      return o.depthwise ? tf.fused.depthwiseConv2d(args) : tf.fused.conv2d(args);
    },
    linear: (v, o) => {
      const x = v[o.x], [k, n] = weights[o.w].shape;
      const y = tf.fused.matMul({ a: x.rank === 2 ? x : tf.reshape(x, [-1, k]), b: weights[o.w], bias: weights[o.b], activation: o.act });
      return x.rank === 2 ? y : tf.reshape(y, [...x.shape.slice(0, -1), n]);
    },
    unary: (v, o) => UNARY[o.fn](v[o.x]),
    binary: (v, o) => (o.fn === "add" ? tf.add : tf.mul)(v[o.x], v[o.y]),
    affine: (v, o) => tf.add(tf.mul(v[o.x], weights[o.scale]), weights[o.shift]),
    mean_hw: (v, o) => tf.mean(v[o.x], [1, 2], true),
    maxpool: (v, o) => tf.maxPool(v[o.x], o.k, o.stride, pad(o.pad)),
    reshape: (v, o) => tf.reshape(v[o.x], o.shape),
    transpose: (v, o) => tf.transpose(v[o.x], o.perm),
    slice: (v, o) => tf.reshape(tf.slice(v[o.x], o.begin, o.size), o.shape),
    sdpa: (v, o) => tf.matMul(tf.softmax(tf.mul(tf.matMul(v[o.q], v[o.k], false, true), scalar(o.scale))), v[o.v]),
    layernorm: (v, o) => {
      const x = v[o.x], { mean, variance } = tf.moments(x, -1, true);
      return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, scalar(o.eps)))), weights[o.w]), weights[o.b]);
    },
  };
  for (const o of graph.ops) if (!OPS[o.op]) throw new Error(`tfjs_graph: op ${o.op} unknown: tfjs_export.py and tfjs_graph.mjs disagree`);

  /** Input tensors (NHWC where the graph wants it), made once and kept. */
  function prepare(inputs) {
    return graph.inputs.map((spec, i) => tf.tidy(() => {
      const t = tf.tensor(inputs[i].data, inputs[i].shape);
      return spec.nhwc ? tf.transpose(t, [0, 2, 3, 1]) : t;
    }));
  }

  async function run(prepared) {
    const outs = tf.tidy(() => {
      const v = Object.fromEntries(graph.inputs.map((spec, i) => [spec.name, prepared[i]]));
      for (const o of graph.ops) v[o.out] = OPS[o.op](v, o);
      return graph.outputs.map((name) => v[name]);
    });
    const data = await Promise.all(outs.map((t) => t.data()));
    for (const t of outs) t.dispose();
    return data;
  }
  function dispose() {
    for (const t of [...Object.values(weights), ...scalars.values()]) t.dispose();
  }
  // apply: one op of graph.ops on the values so far (name -> tensor); profile_kernels.mjs times
  // the kernels of each op apart, so that they are classed by the layer that issued them
  return { prepare, run, dispose, graph, apply: (v, o) => OPS[o.op](v, o) };
}
