// Shared core of the JS loader: reads an exported .wasm (custom sections, metadata, content hash),
// validates every structural field of the metadata against the file (a file is untrusted input: the
// hash detects damage, anyone can recompute it), checks inputs, and runs the plan on one instance
// (plus parked pool workers for threads > 1). Runs where blocking is allowed: a Worker (controller.mjs).
// The file layout and checks are those of torch_wasm_backend/wasm_file.py; keep FORMAT_VERSION in step.

import { INPUT_ERROR, KERNEL_EXPORTS, OP_NAMES, RUN_PLAN_ERRORS } from "./abi_generated.mjs";
import { checkPrograms, evaluate, resolve } from "./sizes.mjs";

export const FORMAT = "torch_wasm_backend.export";
export const FORMAT_VERSION = 3;
const READABLE_VERSIONS = [2, 3];
// dtype -> the typed array holding it
export const DTYPES = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array, bool: Uint8Array, uint8: Uint8Array, int8: Int8Array };
const MAX_VARIANTS = 16, SIZES_KEPT = 8, MAX_SOURCE_CHARS = 400;
const HASH_PREFIX = "sha256:";
const MEMORY_LIMIT = 2 ** 32, MAX_TENSORS = 4096, MAX_DIMS = 32, MAX_WORKER_STACK = 64 * 2 ** 20;
// Models up to this many flops per run (MobileNetV2 224x224 has 0.6 G, a 4-layer d256 encoder at
// seq 128 0.9 G) are warmed up at load (Engine.warmUp): one run on zeros costs about 1.5-2 steady
// runs, < ~100 ms for these on an idle core; a bigger model's first run mostly tiers itself up.
const WARM_UP_MAX_FLOPS = 1e9;
const BROADCAST_OUTPUT_BYTES = 64 * 2 ** 20;  // see wasm_file.py: only stride-0 outputs exceed the arena
// The functions the loader calls are KERNEL_EXPORTS (kernel_abi.def): name -> parameter count (JS
// sees no wasm types; an i64 where i32 belongs throws a TypeError at the call, reported like a trap).
const SIMD_BUILDS = ["baseline", "relaxed"];  // the kernel builds a file may carry (metadata "simd"; absent: baseline)
const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
export const isNode = typeof process !== "undefined" && !!(process.versions && process.versions.node);

/** The file is not a usable export: foreign, truncated, damaged, or from an incompatible producer. */
export class ModelFileError extends Error { constructor(m) { super(m); this.name = "ModelFileError"; } }
/** run() was given inputs that do not fit the model (name, shape or dtype). */
export class ModelInputError extends Error { constructor(m) { super(m); this.name = "ModelInputError"; } }
/** A call ran past its time limit (timeoutMs); the model is unusable afterwards: load it again. */
export class ModelTimeoutError extends Error { constructor(m) { super(m); this.name = "ModelTimeoutError"; } }

// An unsigned LEB128 u32: at most 5 bytes (wasm spec), so a hostile length costs O(1).
function readLeb(bytes, pos, source) {
  let result = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    if (pos >= bytes.length) throw new ModelFileError(`${source}: the file ends inside a section header (truncated file?)`);
    const b = bytes[pos++];
    result += (b & 0x7f) * 2 ** shift;
    if (!(b & 0x80)) {
      if (result >= 2 ** 32) break;
      return [result, pos];
    }
  }
  throw new ModelFileError(`${source}: a section header at byte ${pos} holds a malformed or over-long size (not a u32 LEB128); the file is damaged: re-export or copy it again`);
}

function toBytes(data) {
  // A plain Uint8Array view even for a Node Buffer (whose slice() does not copy).
  if (data instanceof ArrayBuffer || (typeof SharedArrayBuffer !== "undefined" && data instanceof SharedArrayBuffer)) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new ModelFileError(`expected the .wasm file's bytes (ArrayBuffer or Uint8Array), got ${Object.prototype.toString.call(data)}`);
}

/** Sections of an exported file: {bytes, custom: Map(name -> Uint8Array), moduleEnd, metadataStart, memoryFlagsAt, meta}; the metadata is validated. */
export function parseFile(data, source = "model") {
  const bytes = toBytes(data);
  if (bytes.length < 8 || HEADER.some((b, i) => bytes[i] !== b))
    throw new ModelFileError(`${source} is not a WebAssembly module (no '\\0asm' version-1 header); pass a file written by torch_wasm_backend.export(...)`);
  const custom = new Map(), starts = [];
  let pos = 8, metadataStart = -1, memoryFlagsAt = -1;
  while (pos < bytes.length) {
    const start = pos, id = bytes[pos];
    let size, name = "";
    [size, pos] = readLeb(bytes, pos + 1, source);
    if (pos + size > bytes.length)
      throw new ModelFileError(`${source} is truncated: a section at byte ${start} needs ${size} bytes, only ${bytes.length - pos} remain (file is ${bytes.length} bytes). Copy or download it again.`);
    if (metadataStart >= 0)
      throw new ModelFileError(`${source}: a section follows the 'twb.metadata' section (byte ${start}); it must be the last one. The file is damaged: re-export it`);
    if (id === 0) {
      const [nameLen, nameAt] = readLeb(bytes, pos, source);
      if (nameAt + nameLen > pos + size)
        throw new ModelFileError(`${source}: a custom section name at byte ${start} runs past its section; the file is damaged: re-export or copy it again`);
      name = new TextDecoder().decode(bytes.subarray(nameAt, nameAt + nameLen));
      if (custom.has(name) && name.startsWith("twb.")) throw new ModelFileError(`${source} has two '${name}' sections; the file is damaged: re-export it`);
      custom.set(name, bytes.subarray(nameAt + nameLen, pos + size));
      if (name === "twb.metadata") metadataStart = start;
    } else if (id === 2) {
      memoryFlagsAt = findMemoryImportFlags(bytes, pos, source);
    }
    starts.push([start, name]);
    pos += size;
  }
  if (!custom.has("twb.metadata"))
    throw new ModelFileError(`${source} is a wasm module but not a torch_wasm_backend export (no 'twb.metadata' custom section); create one with torch_wasm_backend.export(model, args, path)`);
  let meta;
  try { meta = JSON.parse(new TextDecoder().decode(custom.get("twb.metadata"))); }
  catch (e) { throw new ModelFileError(`${source}: the metadata section is not valid JSON (${e.message}); re-export the model`); }
  if (meta === null || typeof meta !== "object" || Array.isArray(meta))
    throw new ModelFileError(`${source}: the metadata is not a JSON object; re-export the model`);
  checkCompatible(meta, source);
  if (meta.format_version === 2) meta = fromVersion2(meta);
  for (const name of ["twb.plan", "twb.weights"])
    if (!custom.has(name)) throw new ModelFileError(`${source} has no '${name}' section; re-export the model`);
  // Both loaders compile bytes[0, moduleEnd): nothing of the module may hide after the plan.
  if (starts.slice(-3).map(([, n]) => n).join() !== "twb.plan,twb.weights,twb.metadata")
    throw new ModelFileError(`${source}: its last sections are not twb.plan, twb.weights, twb.metadata in this order; the file is damaged: re-export it`);
  validate(meta, custom.get("twb.plan").length, custom.get("twb.weights").length, source);
  return { bytes, custom, moduleEnd: starts[starts.length - 3][0], metadataStart, memoryFlagsAt, meta };
}

const fail = (source, where, problem) => { throw new ModelFileError(`${source}: metadata field ${where} ${problem}; the file is damaged or was not written by torch_wasm_backend.export: re-export the model`); };
const show = (v) => String(JSON.stringify(v)).slice(0, 40);
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** A version-2 file's metadata (float32, static, one plan) in version 3's structure (as wasm_file._from_version_2). */
function fromVersion2(meta) {
  const lists = ["inputs", "outputs"].every((k) => Array.isArray(meta[k]) && meta[k].every(isObj));
  if (!lists || !isObj(meta.layout)) return meta;  // (validate names what is wrong)
  const strip = (t) => Object.fromEntries(Object.entries(t).filter(([k]) => k !== "offset" && k !== "strides"));
  const variant = {
    when: null, plan_offset: 0, plan_words: meta.layout.plan_words, patches: [], sources: [],
    inputs: meta.inputs.map((t) => (t.offset === null || t.offset === undefined ? null : { offset: t.offset, strides: t.strides })),
    outputs: meta.outputs.map((t) => ({ offset: t.offset, strides: t.strides })),
  };
  return { ...meta, dims: {}, exprs: [], outputs_by_name: false, variants: [variant], inputs: meta.inputs.map(strip), outputs: meta.outputs.map(strip) };
}

/** Checks every structural field against the file's sections and memory layout (as wasm_file.validate). */
export function validate(meta, planBytes, weightsBytes, source = "model") {
  const int = (obj, key, where, lo = 0, hi = MEMORY_LIMIT) => {
    const v = isObj(obj) || Array.isArray(obj) ? obj[key] : undefined, field = where ? `${where}.${key}` : key;
    if (!Number.isSafeInteger(v)) fail(source, field, `is ${show(v)}, not an integer`);
    if (v < lo || v > hi) fail(source, field, `= ${v} is outside [${lo}, ${hi}]`);
    return v;
  };
  const obj = (o, key, isArr, where = "") => { const v = o[key]; if (isArr ? !Array.isArray(v) : !isObj(v)) fail(source, where ? `${where}.${key}` : key, `is not a JSON ${isArr ? "list" : "dict"}`); return v; };
  const producer = obj(meta, "producer");
  for (const key of ["name", "version"]) if (typeof producer[key] !== "string") fail(source, `producer.${key}`, "is not a string");
  if (typeof meta.model !== "string") fail(source, "model", "is not a string");
  int(meta, "abi_version", "", 0, 2 ** 31 - 1);
  if (meta.simd !== undefined && !SIMD_BUILDS.includes(meta.simd)) fail(source, "simd", `is not one of ${SIMD_BUILDS.join(", ")}`);
  for (const key of ["ops", "kernel_calls"])
    for (const [op, n] of Object.entries(obj(meta, key))) if (!Number.isSafeInteger(n) || n < 0) fail(source, `${key}['${op}']`, "is not a count");
  if (typeof meta.flops !== "number" || !(meta.flops >= 0) || !Number.isFinite(meta.flops)) fail(source, "flops", "is not a non-negative number");
  const mem = obj(meta, "memory"), lay = obj(meta, "layout");
  const heapBase = int(mem, "heap_base", "memory");
  const errorAt = int(lay, "error_at", "layout", heapBase);
  const weightsAt = int(lay, "weights_at", "layout", errorAt + 4);
  if (int(lay, "weights_bytes", "layout") !== weightsBytes) fail(source, "layout.weights_bytes", `= ${lay.weights_bytes} but the weights section has ${weightsBytes} bytes`);
  const arenaAt = int(lay, "arena_at", "layout", weightsAt + weightsBytes);
  const arenaEnd = arenaAt + int(lay, "arena_bytes", "layout");
  const planAt = int(lay, "plan_at", "layout", arenaEnd);
  if (int(lay, "plan_words", "layout") * 4 !== planBytes) fail(source, "layout.plan_words", `= ${lay.plan_words} but the plan section has ${planBytes} bytes`);
  const staticBytes = int(mem, "static_bytes", "memory", planAt);
  for (const [key, v] of [["error_at", errorAt], ["weights_at", weightsAt], ["arena_at", arenaAt], ["plan_at", planAt]])
    if (v % 4) fail(source, `layout.${key}`, `= ${v} is not 4-byte aligned`);
  int(mem, "initial_pages", "memory", Math.ceil(staticBytes / 65536), MEMORY_LIMIT / 65536);
  if (int(mem, "worker_stack_bytes", "memory", 4096, MAX_WORKER_STACK) % 16) fail(source, "memory.worker_stack_bytes", "is not 16-byte aligned");

  const dims = obj(meta, "dims");
  for (const [name, r] of Object.entries(dims)) {
    if (!/^[A-Za-z_]\w*$/.test(name)) fail(source, `dims['${name.slice(0, 40)}']`, "is not a valid dim name");
    const lo = int(isObj(r) ? r : {}, "min", `dims.${name}`, 0, 2 ** 31 - 1);
    int(r, "max", `dims.${name}`, lo, 2 ** 31 - 1);
  }
  checkPrograms(meta.exprs, dims, (where, problem) => fail(source, where, problem));
  const nExprs = meta.exprs.length;
  if (typeof meta.outputs_by_name !== "boolean") fail(source, "outputs_by_name", "is not true or false");
  const sizeField = (v, where) => {
    if (typeof v === "number") { if (!Number.isSafeInteger(v) || v < 0 || v > MEMORY_LIMIT) fail(source, where, `= ${show(v)} is not an integer in [0, 2**32]`); }
    else if (!(typeof v === "string" && (Object.hasOwn(dims, v) || (/^#\d+$/.test(v) && Number(v.slice(1)) < nExprs))))
      fail(source, where, `is ${show(v)}, not an integer, a dim's name or a program reference`);
  };
  const inputs = obj(meta, "inputs", true), outputs = obj(meta, "outputs", true);
  if (inputs.length > MAX_TENSORS || outputs.length < 1 || outputs.length > MAX_TENSORS)
    fail(source, "inputs/outputs", `count (${inputs.length} inputs, ${outputs.length} outputs) is not sane`);
  for (const [kind, specs] of [["inputs", inputs], ["outputs", outputs]]) {
    const names = new Set();
    specs.forEach((spec, k) => {
      const where = `${kind}[${k}]`;
      if (!isObj(spec)) fail(source, where, "is not a JSON object");
      if (typeof spec.name !== "string" || !spec.name) fail(source, `${where}.name`, "is not a non-empty string");
      if (names.has(spec.name)) fail(source, `${where}.name`, `'${spec.name}' is used twice among the ${kind}`);
      names.add(spec.name);
      if (!Object.hasOwn(DTYPES, spec.dtype)) fail(source, `${where}.dtype`, `is ${show(spec.dtype)}, not one of ${Object.keys(DTYPES).join(", ")}`);
      if (!Array.isArray(spec.shape)) fail(source, `${where}.shape`, "is not a JSON list");
      if (spec.shape.length > MAX_DIMS) fail(source, `${where}.shape`, `has ${spec.shape.length} dimensions (at most ${MAX_DIMS})`);
      spec.shape.forEach((v, d) => sizeField(v, `${where}.shape[${d}]`));
    });
  }
  const bound = new Set(inputs.flatMap((spec) => spec.shape.filter((v) => typeof v === "string" && Object.hasOwn(dims, v))));
  const unbound = Object.keys(dims).filter((d) => !bound.has(d));
  if (unbound.length) fail(source, "dims", `name ${JSON.stringify(unbound)}, which no input's shape determines`);

  const variants = obj(meta, "variants", true);
  if (variants.length < 1 || variants.length > MAX_VARIANTS) fail(source, "variants", `has ${variants.length} entries (1 to ${MAX_VARIANTS})`);
  variants.forEach((variant, j) => {
    const where = `variants[${j}]`;
    if (!isObj(variant)) fail(source, where, "is not a JSON object");
    if (variant.when !== null && !(Number.isSafeInteger(variant.when) && variant.when >= 0 && variant.when < nExprs)) fail(source, `${where}.when`, "is not null or a program index");
    const offset = int(variant, "plan_offset", where, 0, lay.plan_words);
    const nWords = int(variant, "plan_words", where, 0, lay.plan_words - offset);
    if (planAt + 4 * nWords > staticBytes) fail(source, `${where}.plan_words`, `= ${nWords} words do not fit below memory.static_bytes`);
    for (const patch of obj(variant, "patches", true, where))
      if (!(Array.isArray(patch) && patch.length === 2 && Number.isSafeInteger(patch[0]) && Number.isSafeInteger(patch[1])
            && patch[0] >= 0 && patch[0] < nWords && patch[1] >= 0 && patch[1] < nExprs))
        fail(source, `${where}.patches`, `holds ${show(patch)}, not [plan word, program index]`);
    let previous = -1;
    for (const entry of obj(variant, "sources", true, where)) {
      if (!(Array.isArray(entry) && entry.length === 2 && Number.isSafeInteger(entry[0]) && entry[0] > previous
            && entry[0] < nWords && typeof entry[1] === "string" && entry[1].length <= MAX_SOURCE_CHARS))
        fail(source, `${where}.sources`, `holds ${show(entry)}, not [increasing plan word, text]`);
      previous = entry[0];
    }
    for (const [kind, specs] of [["inputs", inputs], ["outputs", outputs]]) {
      const views = obj(variant, kind, true, where);
      if (views.length !== specs.length) fail(source, `${where}.${kind}`, `has ${views.length} entries for ${specs.length} ${kind}`);
      views.forEach((view, k) => {
        const at = `${where}.${kind}[${k}]`;
        if (view === null && kind === "inputs") return;  // an input the model does not read
        if (!isObj(view)) fail(source, at, "is not a JSON object");
        sizeField(view.offset, `${at}.offset`);
        const strides = obj(view, "strides", true, at);
        if (strides.length !== specs[k].shape.length) fail(source, `${at}.strides`, `has ${strides.length} entries for ${specs[k].shape.length} dimensions`);
        strides.forEach((v, d) => sizeField(v, `${at}.strides[${d}]`));
      });
    }
  });
  if (Object.keys(dims).length === 0)  // every view is known now: check them at load time
    variants.forEach((_, j) => { const [ins, outs] = viewsAt(meta, j, {}, []); checkViews(meta, ins, outs, source); });
}

/** The concrete inputs and outputs ({name, dtype, shape, offset, strides}) of a variant at these sizes. */
export function viewsAt(meta, j, dims, values) {
  const r = (v) => resolve(v, dims, values), chosen = meta.variants[j];
  return ["inputs", "outputs"].map((kind) => meta[kind].map((spec, k) => {
    const view = chosen[kind][k];
    return { name: spec.name, dtype: spec.dtype, shape: spec.shape.map(r), offset: view ? r(view.offset) : null, strides: view ? view.strides.map(r) : null };
  }));
}

/** Concrete views stay inside their regions (as wasm_file.check_views): inputs (written) in the arena, not overlapping; outputs in the arena or the weights. */
export function checkViews(meta, inputs, outputs, source = "model") {
  const lay = meta.layout, arenaAt = lay.arena_at, arenaEnd = lay.arena_at + lay.arena_bytes;
  const weightsAt = lay.weights_at, weightsEnd = lay.weights_at + lay.weights_bytes;
  const written = [];
  for (const [kind, specs] of [["inputs", inputs], ["outputs", outputs]]) {
    for (const spec of specs) {
      const where = `${kind} '${spec.name}'`;
      if (spec.offset === null) continue;
      const itemsize = DTYPES[spec.dtype].BYTES_PER_ELEMENT;
      for (const v of [spec.offset, ...spec.shape, ...spec.strides])
        if (!Number.isSafeInteger(v) || v < 0 || v > MEMORY_LIMIT) fail(source, where, `has a size, stride or offset of ${show(v)} (not an integer in [0, 2**32])`);
      if (spec.offset % itemsize) fail(source, where, `offset ${spec.offset} is not aligned to its ${itemsize}-byte elements`);
      const numel = spec.shape.reduce((a, b) => Math.min(a * b, MEMORY_LIMIT), 1);
      if (numel === 0) continue;
      if (itemsize * numel > Math.max(arenaEnd - arenaAt, BROADCAST_OUTPUT_BYTES)) fail(source, where, `shape [${spec.shape}] holds more values than the activations arena (${arenaEnd - arenaAt} bytes)`);
      let last = 0;
      spec.shape.forEach((size, d) => { last += (size - 1) * spec.strides[d]; });
      const lo = spec.offset, hi = spec.offset + itemsize * (last + 1);
      // Inputs are written: arena only. Outputs are read: arena, or the weights (a returned parameter).
      const inWeights = kind === "outputs" && weightsAt <= lo && hi <= weightsEnd;
      if (!(arenaAt <= lo && hi <= arenaEnd) && !inWeights) fail(source, where, `covers bytes [${lo}, ${hi}), outside the ${kind === "outputs" ? "activations arena and the weights" : "activations arena"}`);
      if (kind === "inputs") {
        if (!nonOverlapping(spec.shape, spec.strides)) fail(source, `${where} strides`, "make elements overlap; an input must not alias itself");
        for (const [oLo, oHi, other] of written) if (lo < oHi && oLo < hi) fail(source, where, `overlaps input '${other}' in memory`);
        written.push([lo, hi, spec.name]);
      }
    }
  }
}

function nonOverlapping(shape, strides) {
  let span = 1;
  for (const [size, stride] of shape.map((s, i) => [s, strides[i]]).filter(([s]) => s > 1).sort((a, b) => a[1] - b[1])) {
    if (stride < span) return false;
    span = stride * size;
  }
  return true;
}

/** Exactly one import, env.memory; the kernel functions exported. */
export function checkInterface(module, source = "model") {
  const imports = WebAssembly.Module.imports(module);
  if (imports.length !== 1 || imports[0].module !== "env" || imports[0].name !== "memory" || imports[0].kind !== "memory") {
    const listed = imports.slice(0, 5).map((i) => `${i.module}.${i.name} (${i.kind})`).join(", ") || "nothing";
    throw new ModelFileError(`${source} imports ${listed}; an exported model may import exactly one thing, the shared memory env.memory. Refusing to load it: it was not written by torch_wasm_backend.export (re-export the model)`);
  }
  const exports = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
  for (const name of Object.keys(KERNEL_EXPORTS))
    if (exports.get(name) !== "function") throw new ModelFileError(`${source}: its module lacks the kernel function ${name}; it was not written by torch_wasm_backend.export: re-export the model`);
}

function checkArity(ex, source) {
  for (const [name, params] of Object.entries(KERNEL_EXPORTS))
    if (ex[name].length !== params) throw new ModelFileError(`${source}: its kernel function ${name} takes ${ex[name].length} arguments, not ${params}; it was not written by torch_wasm_backend.export: re-export the model`);
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

// The smallest module using f32x4.relaxed_madd: (func (param v128 v128 v128) (result v128) ...).
const RELAXED_SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 1, 96, 3, 123, 123, 123, 1, 123, 3, 2,
  1, 0, 10, 13, 1, 11, 0, 32, 0, 32, 1, 32, 2, 253, 133, 2, 11]);

/** Whether this engine runs relaxed SIMD, which files exported with simd="relaxed" need (Chrome and
 * Edge 114+, Node.js 22+ or 20 with --experimental-wasm-relaxed-simd; not Safari). */
export function relaxedSimdSupported() { return WebAssembly.validate(RELAXED_SIMD_PROBE); }

export function checkCompatible(meta, source = "model") {
  const p = meta.producer || {};
  const madeBy = `${p.name || "?"} ${p.version || "?"}`;
  if (meta.format !== FORMAT)
    throw new ModelFileError(`${source}: unknown format ${JSON.stringify(meta.format)} (made by ${madeBy}); this loader reads '${FORMAT}'`);
  if (!READABLE_VERSIONS.includes(meta.format_version))
    throw new ModelFileError(`${source} was written by ${madeBy} in export format version ${meta.format_version}; this loader reads versions ${READABLE_VERSIONS.join(", ")}. Re-export the model with the matching torch_wasm_backend, or use the loader shipped with the version that wrote it.`);
  if (meta.simd === "relaxed" && !relaxedSimdSupported())
    throw new ModelFileError(`${source} was exported with simd="relaxed" (relaxed-SIMD kernels) and this JavaScript engine has no relaxed SIMD (Safari; Node.js 20 without --experimental-wasm-relaxed-simd). Load a file exported with simd="baseline" (the default) here; relaxedSimdSupported() tells which file to fetch.`);
}

// Where the recorded hash string sits in the metadata section (-1 unless exactly once).
function hashPosition(file) {
  const recorded = file.meta.content_hash;
  if (typeof recorded !== "string" || recorded.length !== HASH_PREFIX.length + 64 || !recorded.startsWith(HASH_PREFIX)) return -1;
  const needle = new TextEncoder().encode(recorded), b = file.bytes;
  let found = -1;
  for (let i = file.metadataStart; i + needle.length <= b.length; i++) {
    let k = 0;
    while (k < needle.length && b[i + k] === needle[k]) k++;
    if (k === needle.length) { if (found >= 0) return -1; found = i; }
  }
  return found;
}

/** Re-hashes the whole file (the recorded hash's digits zeroed) and compares (detects damaged files). */
export async function verifyHash(file, source = "model") {
  let subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle && isNode) subtle = (await import("node:crypto")).webcrypto.subtle;  // Node < 19
  if (!subtle) { console.warn(`${source}: crypto.subtle is unavailable (not a secure context); the content hash is not checked (the metadata is still validated)`); return; }
  const at = hashPosition(file);
  let hex = "(none)";
  if (at >= 0) {
    const zeroed = new Uint8Array(file.bytes);  // a copy: the caller's bytes stay as they are
    zeroed.fill(0x30, at + HASH_PREFIX.length, at + HASH_PREFIX.length + 64);  // '0'
    const digest = new Uint8Array(await subtle.digest("SHA-256", zeroed));
    hex = HASH_PREFIX + Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  if (hex !== file.meta.content_hash)
    throw new ModelFileError(`${source} is damaged: its content hash ${hex.slice(0, 23)}... does not match the ${String(file.meta.content_hash).slice(0, 23)}... recorded at export; re-export or copy it again`);
}

/** The module bytes with the memory import made non-shared: without cross-origin isolation a page
 * cannot create shared memory. Atomic instructions stay valid on unshared memory, and with one
 * thread the kernels never wait, so the plan runs unchanged. */
export function unsharedModuleBytes(file) {
  const copy = file.bytes.slice(0, file.moduleEnd);
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

const typeName = (v) => (v && v.constructor ? v.constructor.name : typeof v);
const staticShape = (spec) => (spec.shape.every((v) => typeof v === "number") ? spec.shape : null);

/** {name: TypedArray | {data, shape}} -> {name: {data, shape}} with data of the input's dtype (an
 * Int32Array for an int64 input is widened), or a ModelInputError naming the problem. */
export function checkInputs(meta, inputs) {
  if (inputs === null || typeof inputs !== "object") throw new ModelInputError(`run() takes an object {inputName: TypedArray or {data, shape}}; the model's inputs are ${JSON.stringify(meta.inputs.map((i) => i.name))}`);
  const names = meta.inputs.map((i) => i.name), out = {};
  for (const key of Object.keys(inputs))
    if (!names.includes(key)) throw new ModelInputError(`unknown input name '${key}'; the model's inputs are ${JSON.stringify(names)}`);
  for (const spec of meta.inputs) {
    let value = inputs[spec.name];
    if (value === undefined) throw new ModelInputError(`missing input '${spec.name}'; the model's inputs are ${JSON.stringify(names)}`);
    let shape = null;
    if (value && !ArrayBuffer.isView(value) && value.data !== undefined) { shape = value.shape || value.dims; value = value.data; }
    else if (ArrayBuffer.isView(value) && Array.isArray(value.shape)) shape = value.shape;  // an output passed back (a KV cache)
    const Want = DTYPES[spec.dtype];
    if (spec.dtype === "int64" && value instanceof Int32Array) value = BigInt64Array.from(value, (v) => BigInt(v));
    if (!(value instanceof Want)) {
      const example = spec.dtype === "int64" ? "BigInt64Array.from(ids, BigInt) or an Int32Array" : `${Want.name}.from(values)`;
      throw new ModelInputError(`input '${spec.name}': got ${typeName(value)}, the model takes ${spec.dtype}: pass a ${Want.name} (e.g. ${example})`);
    }
    if (shape === null) {
      shape = staticShape(spec);
      if (shape === null) throw new ModelInputError(`input '${spec.name}' has dynamic dims [${spec.shape}]: pass {data, shape} so the model knows its shape`);
    }
    if (!Array.isArray(shape) || shape.length !== spec.shape.length || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw new ModelInputError(`input '${spec.name}': shape ${JSON.stringify(shape)}, the model takes ${spec.shape.length} dims: [${spec.shape}]`);
    if (value.length !== prod(shape))
      throw new ModelInputError(`input '${spec.name}': ${value.length} values, the model takes shape [${shape}] = ${prod(shape)} values`);
    out[spec.name] = { data: value, shape: [...shape] };
  }
  bindDims(meta, meta.inputs.map((spec) => out[spec.name].shape));
  return out;
}

/** The dims' values from the inputs' shapes; a ModelInputError names a fixed dim of the wrong size,
 * a dim out of its range, or two inputs that disagree on a dim (as exported_model.bind_dims). */
export function bindDims(meta, shapes) {
  const dims = {}, seen = {};
  meta.inputs.forEach((spec, k) => spec.shape.forEach((want, axis) => {
    const have = shapes[k][axis], where = `input '${spec.name}' dim ${axis}`;
    if (typeof want === "number") {
      if (have !== want) throw new ModelInputError(`${where} is ${have}, the model was exported for ${want} there (shape [${spec.shape}]); export with that dim in dynamic_shapes to vary it`);
    } else if (Object.hasOwn(meta.dims, want)) {
      const r = meta.dims[want];
      if (Object.hasOwn(dims, want) && dims[want] !== have) throw new ModelInputError(`${where} is ${have} but ${seen[want]} is ${dims[want]}: both are dim '${want}' and must be equal`);
      if (have < r.min || have > r.max) throw new ModelInputError(`${where} (dim '${want}') is ${have}, outside its range [${r.min}, ${r.max}] given at export`);
      dims[want] = have; seen[want] = where;
    }
  }));
  return dims;
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
  constructor(module, memory, meta, plan, weights, threads, source = "model") {
    this.meta = meta; this.memory = memory; this.threads = threads; this.source = source;
    let abi, heapBase;
    try {
      this.instance = new WebAssembly.Instance(module, { env: { memory } });  // runs a start function
      this.ex = this.instance.exports;
      checkArity(this.ex, source);
      this.ex._initialize();
      // GEMM broadcasts by load32_splat: 1.10-1.15x faster in V8 (kernels_cpp/gemm.cpp,
      // g_load_splat); files exported before the switch existed lack it.
      if (typeof this.ex.set_gemm_load_splat === "function") this.ex.set_gemm_load_splat(1);
      // int8 conv tiles as functions of their own: V8 keeps their accumulators in registers then
      // (kernels_cpp/quant.cpp, g_qconv_split_tiles).
      if (typeof this.ex.set_qconv_split_tiles === "function") this.ex.set_qconv_split_tiles(1);
      abi = this.ex.abi_version(); heapBase = this.ex.heap_base() >>> 0;
    } catch (e) {
      if (e instanceof ModelFileError) throw e;
      throw new ModelFileError(`${source}: instantiating its module failed (${e && e.message || e}); the file is damaged or not a torch_wasm_backend export: re-export it`);
    }
    if (abi !== meta.abi_version || heapBase !== meta.memory.heap_base)
      throw new ModelFileError(`the file's kernels (ABI ${abi}, heap base ${heapBase}) do not match its plan (ABI ${meta.abi_version}, heap base ${meta.memory.heap_base}); re-export the model`);
    const u8 = new Uint8Array(memory.buffer);
    u8.set(weights, meta.layout.weights_at);
    this.plan = new Int32Array(plan.buffer.slice(plan.byteOffset, plan.byteOffset + plan.byteLength));
    this.arrays = Object.fromEntries(Object.entries(DTYPES).map(([name, T]) => [name, new T(memory.buffer)]));
    this.i32 = this.arrays.int32;
    this.sizes = new Map();  // input shapes -> {words, views} of the variant serving them (the last few)
    this.planInMemory = null;
    this.broken = null;
    // A dynamic file's views are checked for each call's sizes; check the extremes of the dims'
    // ranges now, so that a damaged file fails at load (and the first new length does not run this
    // code for the first time).
    for (const pick of Object.keys(meta.dims).length ? ["max", "min"] : []) {
      const dims = Object.fromEntries(Object.entries(meta.dims).map(([name, r]) => [name, r[pick]]));
      const values = evaluate(meta.exprs, dims);
      try { this.sizesFor(meta.inputs.map((spec) => spec.shape.map((v) => resolve(v, dims, values)))); }
      catch (e) { if (!(e instanceof ModelInputError)) throw e; }  // (derived dims may rule an extreme out)
    }
  }

  /** The plan words (size-dependent ones patched) and concrete views for these input shapes. */
  sizesFor(shapes) {
    const key = JSON.stringify(shapes);
    let found = this.sizes.get(key);
    if (found) { this.sizes.delete(key); this.sizes.set(key, found); return found; }
    const meta = this.meta, dims = bindDims(meta, shapes), values = evaluate(meta.exprs, dims);
    const j = meta.variants.findIndex((v) => v.when === null || values[v.when] === 1);
    if (j < 0) throw new ModelFileError(`${this.source}: no plan variant serves the sizes ${JSON.stringify(dims)}; the file is damaged: re-export it`);
    const [inputs, outputs] = viewsAt(meta, j, dims, values);
    checkViews(meta, inputs, outputs, this.source);
    inputs.forEach((spec, k) => {
      if (spec.shape.some((d, i) => d !== shapes[k][i]))  // (a derived dim: its program disagrees with the input)
        throw new ModelInputError(`${this.source}: input '${spec.name}' has shape [${shapes[k]}]; at ${JSON.stringify(dims)} the model takes [${spec.shape}]`);
    });
    const variant = meta.variants[j];
    const words = this.plan.slice(variant.plan_offset, variant.plan_offset + variant.plan_words);
    for (const [word, program] of variant.patches) {
      const v = values[program];
      if (!Number.isSafeInteger(v) || v < -(2 ** 31) || v >= 2 ** 32)
        throw new ModelFileError(`${this.source}: plan word ${word} evaluates to ${v} at ${JSON.stringify(dims)}, not an int32; the file is damaged: re-export it`);
      words[word] = v | 0;
    }
    found = { words, inputs, outputs, variant };
    this.sizes.set(key, found);
    if (this.sizes.size > SIZES_KEPT) this.sizes.delete(this.sizes.keys().next().value);
    return found;
  }

  /** checked: checkInputs' result. Returns {name: typed array}, with each output's shape in `shapes`. */
  run(checked) {
    const sizes = this.enter(checked), lay = this.meta.layout;
    this.check(this.call(lay.plan_at, sizes.words.length), 0, sizes);
    return this.collect(sizes);
  }

  /** run(), timing each plan record on its own: one run_plan call per record, each between two
   * performance.now() reads (the kernel call sequence is the plan's). Returns run()'s result plus
   * `steps`: [{op, word, ms}] in plan order (op: the kernel's name in kernel_abi.def, word: the
   * record's first word in the plan) and `ms`: the whole call. Opt-in (Model.profile): run() itself
   * stays one run_plan call. */
  profile(checked) {
    const start = performance.now();
    const sizes = this.enter(checked), lay = this.meta.layout, words = sizes.words, steps = [];
    for (let at = 0; at < words.length;) {
      // (a record whose length is negative or runs past the plan is run_plan's to reject: given the
      // rest of the plan, it reports a wrong argument count or truncation)
      const n = words[at + 1] >= 0 ? 2 + words[at + 1] : words.length - at, from = performance.now();
      const rc = this.call(lay.plan_at + 4 * at, Math.min(n, words.length - at));
      steps.push({ op: OP_NAMES[words[at]] || `op ${words[at]}`, word: at, ms: performance.now() - from });
      this.check(rc, at, sizes);
      at += n;
    }
    const result = this.collect(sizes);
    return { ...result, steps, ms: performance.now() - start };
  }

  /** Puts the plan for these inputs' sizes and the inputs into memory; returns the sizes entry. */
  enter(checked) {
    if (this.broken) throw new Error(`model unusable after an earlier failure (${this.broken}); load it again`);
    const lay = this.meta.layout;
    const sizes = this.sizesFor(this.meta.inputs.map((spec) => checked[spec.name].shape));
    if (this.planInMemory !== sizes) { this.i32.set(sizes.words, lay.plan_at / 4); this.planInMemory = sizes; }
    for (const spec of sizes.inputs) {
      if (spec.offset === null) continue;  // an input the model ignores
      const mem = this.arrays[spec.dtype], at = spec.offset / mem.BYTES_PER_ELEMENT, src = checked[spec.name].data;
      if (isContiguous(spec.shape, spec.strides)) mem.set(src, at);
      else copyStrided(mem, at, spec.strides, src, 0, contiguousStrides(spec.shape), spec.shape);
    }
    return sizes;
  }

  /** run_plan on the n_words plan words at byte planAt; a trap in the file's own code (damaged,
   * hostile, or a kernel bug) breaks the model. */
  call(planAt, nWords) {
    try { return this.ex.run_plan(planAt, nWords, this.threads, this.meta.layout.error_at); }
    catch (e) {
      this.broken = String(e && e.message || e);
      throw new ModelFileError(`${this.source}: the model's code trapped while running (${this.broken}); load it again`);
    }
  }

  /** Raises for run_plan's code `rc` of a plan (part) starting at plan word `base`. */
  check(rc, base, sizes) {
    if (rc === 0) return;
    const at = base + new Int32Array(this.memory.buffer, this.meta.layout.error_at, 1)[0];
    if (rc === INPUT_ERROR) {
      let where = null;  // what the plan word belongs to, if the file says (variant.sources)
      for (const [start, text] of sizes.variant.sources) { if (start > at) break; where = text; }
      throw new ModelInputError(`${this.source}: an index in the inputs is out of range (at plan word ${at}${where ? `, in ${where}` : ""}); nothing was computed`);
    }
    this.broken = `${RUN_PLAN_ERRORS[rc] || rc} at plan word ${at}`;
    throw new ModelFileError(`${this.source}: run_plan failed: ${this.broken}; the file is damaged: re-export it`);
  }

  /** The outputs of the run just done, as run() returns them. */
  collect(sizes) {
    const outputs = {}, shapes = {};
    for (const spec of sizes.outputs) {
      const mem = this.arrays[spec.dtype], n = prod(spec.shape), at = spec.offset / mem.BYTES_PER_ELEMENT;
      if (isContiguous(spec.shape, spec.strides)) outputs[spec.name] = mem.slice(at, at + n);
      else { const out = new DTYPES[spec.dtype](n); copyStrided(out, 0, contiguousStrides(spec.shape), mem, at, spec.strides, spec.shape); outputs[spec.name] = out; }
      shapes[spec.name] = spec.shape;
    }
    return { outputs, shapes };
  }

  /** Runs the plan once on zero inputs, at the dims' smallest sizes (the cheapest run), so that V8
   * has compiled the kernels the model calls and spent their tier-up budgets before the first
   * run(): V8 runs a wasm function in its baseline compiler (Liftoff, ~1.5-2x slower here) until the
   * function has executed enough code, then compiles it with TurboFan in the background and uses
   * that code from its next call on. Skipped (returns null) for models over WARM_UP_MAX_FLOPS, whose
   * one run would cost more than the warm-up saves; returns the milliseconds spent otherwise. */
  warmUp() {
    const meta = this.meta;
    if (meta.flops > WARM_UP_MAX_FLOPS) return null;
    const dims = Object.fromEntries(Object.entries(meta.dims).map(([name, r]) => [name, r.min]));
    const values = evaluate(meta.exprs, dims);
    const inputs = {};
    for (const spec of meta.inputs) {
      const shape = spec.shape.map((v) => resolve(v, dims, values));
      inputs[spec.name] = { data: new DTYPES[spec.dtype](prod(shape)), shape };
    }
    const start = performance.now();
    try { this.run(inputs); }
    catch (e) {  // zeros may be out of a derived dim's range or an index's: nothing to warm up then
      if (!(e instanceof ModelInputError)) throw e;
    }
    return performance.now() - start;
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

/** Memory + main Engine + (threads - 1) pool workers parked in worker_loop; warmUp: run the plan
 * once on zeros first (Engine.warmUp). */
export async function createRunner(module, file, threads, shared, source = "model", warmUp = true) {
  const { meta } = file;
  const pages = memoryPages(meta, threads);
  if (pages > MEMORY_LIMIT / 65536) throw new ModelFileError(`${source} with ${threads} threads needs more than 4 GiB of memory (wasm32); use fewer threads`);
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared });
  const engine = new Engine(module, memory, meta, file.custom.get("twb.plan"), file.custom.get("twb.weights"), threads, source);
  const workers = [];
  for (let id = 1; id < threads; id++) {
    const w = await spawnWorker(new URL("./pool_worker.mjs", import.meta.url));
    w.onMessage((m) => { if (m.type === "error") engine.broken = `worker ${id}: ${m.message}`; });
    w.onError((e) => { engine.broken = `worker ${id}: ${String(e && e.message || e)}`; });
    w.post({ module, memory, workerId: id, stackTop: meta.memory.static_bytes + id * meta.memory.worker_stack_bytes });
    engine.register(1);  // counted at once; tasks it has not joined yet are run by the others
    workers.push(w);
  }
  const warmUpMs = warmUp ? engine.warmUp() : null;
  return {
    engine,
    memory,
    warmUpMs,
    run: (checked) => engine.run(checked),
    close: () => { if (workers.length) { engine.shutdown(); for (const w of workers) w.terminate(); workers.length = 0; } },
  };
}
