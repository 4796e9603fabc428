// Shared core of the JS loader: reads an exported .wasm (custom sections, metadata, content hash),
// checks inputs, and runs the plan on one instance (plus parked pool workers for threads > 1).
// Runs wherever blocking is allowed: the Node.js main thread, or a browser Worker (controller.mjs).
// The file layout is written by torch_wasm_backend/wasm_file.py; keep FORMAT_VERSION in step.

export const FORMAT = "torch_wasm_backend.export";
export const FORMAT_VERSION = 1;
const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const RUN_PLAN_ERRORS = { "-1": "unknown op code", "-2": "wrong argument count for op", "-3": "truncated plan", "-4": "a worker thread trapped" };
export const isNode = typeof process !== "undefined" && !!(process.versions && process.versions.node);

/** The file is not a usable export: foreign, truncated, damaged, or from an incompatible producer. */
export class ModelFileError extends Error { constructor(m) { super(m); this.name = "ModelFileError"; } }
/** run() was given inputs that do not fit the model (name, shape or dtype). */
export class ModelInputError extends Error { constructor(m) { super(m); this.name = "ModelInputError"; } }

function readLeb(bytes, pos, source) {
  let result = 0, shift = 0;
  for (;;) {
    if (pos >= bytes.length) throw new ModelFileError(`${source}: the file ends inside a section header (truncated file?)`);
    const b = bytes[pos++];
    result += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if (!(b & 0x80)) return [result, pos];
  }
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new ModelFileError(`expected the .wasm file's bytes (ArrayBuffer or Uint8Array), got ${Object.prototype.toString.call(data)}`);
}

/** Sections of an exported file: {bytes, custom: Map(name -> Uint8Array), metadataStart, memoryFlagsAt, meta}. */
export function parseFile(data, source = "model") {
  const bytes = toBytes(data);
  if (bytes.length < 8 || HEADER.some((b, i) => bytes[i] !== b))
    throw new ModelFileError(`${source} is not a WebAssembly module (no '\\0asm' version-1 header); pass a file written by torch_wasm_backend.export(...)`);
  const custom = new Map();
  let pos = 8, metadataStart = -1, memoryFlagsAt = -1;
  while (pos < bytes.length) {
    const start = pos, id = bytes[pos];
    let size;
    [size, pos] = readLeb(bytes, pos + 1, source);
    if (pos + size > bytes.length)
      throw new ModelFileError(`${source} is truncated: a section at byte ${start} needs ${size} bytes, only ${bytes.length - pos} remain (file is ${bytes.length} bytes). Copy or download it again.`);
    if (id === 0) {
      const [nameLen, nameAt] = readLeb(bytes, pos, source);
      const name = new TextDecoder().decode(bytes.subarray(nameAt, nameAt + nameLen));
      custom.set(name, bytes.subarray(nameAt + nameLen, pos + size));
      if (name === "twb.metadata") metadataStart = start;
    } else if (id === 2) {
      memoryFlagsAt = findMemoryImportFlags(bytes, pos, source);
    }
    pos += size;
  }
  if (!custom.has("twb.metadata"))
    throw new ModelFileError(`${source} is a wasm module but not a torch_wasm_backend export (no 'twb.metadata' custom section); create one with torch_wasm_backend.export(model, args, path)`);
  let meta;
  try { meta = JSON.parse(new TextDecoder().decode(custom.get("twb.metadata"))); }
  catch (e) { throw new ModelFileError(`${source}: the metadata section is not valid JSON (${e.message}); re-export the model`); }
  checkCompatible(meta, source);
  for (const name of ["twb.plan", "twb.weights"])
    if (!custom.has(name)) throw new ModelFileError(`${source} has no '${name}' section; re-export the model`);
  return { bytes, custom, metadataStart, memoryFlagsAt, meta };
}

// Position of the limits-flags byte of the `env.memory` import (0x03 = shared with maximum).
function findMemoryImportFlags(bytes, pos, source) {
  let count;
  [count, pos] = readLeb(bytes, pos, source);
  for (let i = 0; i < count; i++) {
    for (let k = 0; k < 2; k++) { let n; [n, pos] = readLeb(bytes, pos, source); pos += n; }
    const kind = bytes[pos++];
    if (kind === 2) return pos;
    if (kind === 0) { [, pos] = readLeb(bytes, pos, source); }
    else throw new ModelFileError(`${source}: unexpected import kind ${kind}; the kernel module imports only env.memory`);
  }
  return -1;
}

export function checkCompatible(meta, source = "model") {
  const p = meta.producer || {};
  const madeBy = `${p.name || "?"} ${p.version || "?"}`;
  if (meta.format !== FORMAT)
    throw new ModelFileError(`${source}: unknown format ${JSON.stringify(meta.format)} (made by ${madeBy}); this loader reads '${FORMAT}'`);
  if (meta.format_version !== FORMAT_VERSION)
    throw new ModelFileError(`${source} was written by ${madeBy} in export format version ${meta.format_version}; this loader reads version ${FORMAT_VERSION}. Re-export the model with the matching torch_wasm_backend, or use the loader shipped with the version that wrote it.`);
}

/** Re-hashes kernels + plan + weights and compares with the metadata (detects damaged files). */
export async function verifyHash(file, source = "model") {
  let subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle && isNode) subtle = (await import("node:crypto")).webcrypto.subtle;  // Node < 19
  if (!subtle) { console.warn(`${source}: crypto.subtle is unavailable (not a secure context); the content hash is not checked`); return; }
  const digest = new Uint8Array(await subtle.digest("SHA-256", file.bytes.subarray(0, file.metadataStart)));
  const hex = "sha256:" + Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  if (hex !== file.meta.content_hash)
    throw new ModelFileError(`${source} is damaged: its content hash ${hex.slice(0, 23)}... does not match the ${String(file.meta.content_hash).slice(0, 23)}... recorded at export; re-export or copy it again`);
}

/** The module bytes with the memory import made non-shared: without cross-origin isolation a page
 * cannot create shared memory. Atomic instructions stay valid on unshared memory, and with one
 * thread the kernels never wait, so the plan runs unchanged. */
export function unsharedModuleBytes(file) {
  const copy = file.bytes.slice(0, file.metadataStart);
  if (file.memoryFlagsAt < 0 || (copy[file.memoryFlagsAt] & 2) === 0) return copy;
  copy[file.memoryFlagsAt] &= ~2;
  return copy;
}

const prod = (shape) => shape.reduce((a, b) => a * b, 1);
const isContiguous = (shape, strides) => {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) { if (shape[i] !== 1 && strides[i] !== expected) return false; expected *= shape[i]; }
  return true;
};

/** {name: Float32Array | {data, shape}} -> {name: Float32Array}, or a ModelInputError naming the problem. */
export function checkInputs(meta, inputs) {
  if (inputs === null || typeof inputs !== "object") throw new ModelInputError(`run() takes an object {inputName: Float32Array}; the model's inputs are ${JSON.stringify(meta.inputs.map((i) => i.name))}`);
  const names = meta.inputs.map((i) => i.name), out = {};
  for (const key of Object.keys(inputs))
    if (!names.includes(key)) throw new ModelInputError(`unknown input name '${key}'; the model's inputs are ${JSON.stringify(names)}`);
  for (const spec of meta.inputs) {
    let value = inputs[spec.name];
    if (value === undefined) throw new ModelInputError(`missing input '${spec.name}'; the model's inputs are ${JSON.stringify(names)}`);
    let shape = null;
    if (value && !ArrayBuffer.isView(value) && value.data !== undefined) { shape = value.shape || value.dims; value = value.data; }
    if (!(value instanceof Float32Array)) {
      const got = value && value.constructor ? value.constructor.name : typeof value;
      throw new ModelInputError(`input '${spec.name}': got ${got}, the model takes float32: pass a Float32Array (e.g. Float32Array.from(values))`);
    }
    if (shape && (shape.length !== spec.shape.length || shape.some((s, i) => s !== spec.shape[i])))
      throw new ModelInputError(`input '${spec.name}': shape [${shape}], the model was exported for [${spec.shape}]; export again with example inputs of the shape you need`);
    if (value.length !== prod(spec.shape))
      throw new ModelInputError(`input '${spec.name}': ${value.length} values, the model takes shape [${spec.shape}] = ${prod(spec.shape)} values`);
    out[spec.name] = value;
  }
  return out;
}

function copyStrided(dst, dstAt, dstStrides, src, srcAt, srcStrides, shape, dim = 0) {
  if (dim === shape.length) { dst[dstAt] = src[srcAt]; return; }
  for (let i = 0; i < shape[dim]; i++)
    copyStrided(dst, dstAt + i * dstStrides[dim], dstStrides, src, srcAt + i * srcStrides[dim], srcStrides, shape, dim + 1);
}
const contiguousStrides = (shape) => { const s = []; let acc = 1; for (let i = shape.length - 1; i >= 0; i--) { s[i] = acc; acc *= Math.max(shape[i], 1); } return s; };

export function memoryPages(meta, threads) {
  const need = meta.memory.static_bytes + (threads - 1) * meta.memory.worker_stack_bytes;
  return Math.max(meta.memory.initial_pages, Math.ceil(need / 65536));
}

/** One instance on `memory` with weights and plan in place; run() is synchronous. */
export class Engine {
  constructor(module, memory, meta, plan, weights, threads) {
    this.meta = meta; this.memory = memory; this.threads = threads;
    this.instance = new WebAssembly.Instance(module, { env: { memory } });
    this.ex = this.instance.exports;
    this.ex._initialize();
    const abi = this.ex.abi_version(), heapBase = this.ex.heap_base() >>> 0;
    if (abi !== meta.abi_version || heapBase !== meta.memory.heap_base)
      throw new ModelFileError(`the file's kernels (ABI ${abi}, heap base ${heapBase}) do not match its plan (ABI ${meta.abi_version}, heap base ${meta.memory.heap_base}); re-export the model`);
    const u8 = new Uint8Array(memory.buffer);
    u8.set(weights, meta.layout.weights_at);
    u8.set(plan, meta.layout.plan_at);
    this.f32 = new Float32Array(memory.buffer);
    this.broken = null;
  }

  run(inputs) {
    if (this.broken) throw new Error(`model unusable after an earlier failure (${this.broken}); load it again`);
    const f32 = this.f32, lay = this.meta.layout;
    for (const spec of this.meta.inputs) {
      if (spec.offset === null) continue;  // an input the model ignores
      const src = inputs[spec.name];
      if (isContiguous(spec.shape, spec.strides)) f32.set(src, spec.offset / 4);
      else copyStrided(f32, spec.offset / 4, spec.strides, src, 0, contiguousStrides(spec.shape), spec.shape);
    }
    const rc = this.ex.run_plan(lay.plan_at, lay.plan_words, this.threads, lay.error_at);
    if (rc !== 0) {
      this.broken = `${RUN_PLAN_ERRORS[rc] || rc} at plan word ${new Int32Array(this.memory.buffer, lay.error_at, 1)[0]}`;
      throw new Error(`run_plan failed: ${this.broken}`);
    }
    const outputs = {};
    for (const spec of this.meta.outputs) {
      const n = prod(spec.shape), at = spec.offset / 4;
      if (isContiguous(spec.shape, spec.strides)) outputs[spec.name] = f32.slice(at, at + n);
      else { const out = new Float32Array(n); copyStrided(out, 0, contiguousStrides(spec.shape), f32, at, spec.strides, spec.shape); outputs[spec.name] = out; }
    }
    return outputs;
  }

  register(delta) { this.ex.pool_register_worker(delta); }
  shutdown() { this.ex.pool_shutdown(); }
}

async function spawnWorker(url) {
  if (isNode) {
    const { Worker } = await import("node:worker_threads");
    const w = new Worker(url);
    w.unref();  // parked workers must not keep the process alive
    return { post: (m) => w.postMessage(m), onMessage: (f) => w.on("message", f), onError: (f) => w.on("error", f), terminate: () => w.terminate() };
  }
  const w = new Worker(url, { type: "module" });
  return { post: (m) => w.postMessage(m), onMessage: (f) => { w.onmessage = (e) => f(e.data); }, onError: (f) => { w.onerror = (e) => f(e); }, terminate: () => w.terminate() };
}

/** Memory + main Engine + (threads - 1) pool workers parked in worker_loop. */
export async function createRunner(module, file, threads, shared) {
  const { meta } = file;
  const pages = memoryPages(meta, threads);
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared });
  const engine = new Engine(module, memory, meta, file.custom.get("twb.plan"), file.custom.get("twb.weights"), threads);
  const workers = [];
  for (let id = 1; id < threads; id++) {
    const w = await spawnWorker(new URL("./pool_worker.mjs", import.meta.url));
    w.onMessage((m) => { if (m.type === "error") engine.broken = `worker ${id}: ${m.message}`; });
    w.onError((e) => { engine.broken = `worker ${id}: ${String(e && e.message || e)}`; });
    w.post({ module, memory, workerId: id, stackTop: meta.memory.static_bytes + id * meta.memory.worker_stack_bytes });
    engine.register(1);  // counted at once; tasks it has not joined yet are run by the others
    workers.push(w);
  }
  return {
    engine,
    memory,
    run: (inputs) => engine.run(inputs),
    close: () => { if (workers.length) { engine.shutdown(); for (const w of workers) w.terminate(); workers.length = 0; } },
  };
}
