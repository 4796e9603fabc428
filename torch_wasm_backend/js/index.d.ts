// Types of the JS loader (loader.mjs) for models exported by torch_wasm_backend.export().

/** The typed array of each dtype an exported model takes or returns. */
export interface DtypeArrays {
  float32: Float32Array;
  int64: BigInt64Array;
  int32: Int32Array;
  bool: Uint8Array;
  /** uint8 / int8: a quantized model's integer tensors (dequantize: (q - zero_point) * scale). */
  uint8: Uint8Array;
  int8: Int8Array;
}
export type Dtype = keyof DtypeArrays;
export type TensorData = DtypeArrays[Dtype];

/** An input with its shape spelled out: required for inputs with dynamic dims. */
export interface TensorInput<T extends TensorData = TensorData> {
  data: T;
  shape: readonly number[];
}

/** One input: a typed array of the input's dtype (an Int32Array is also taken for int64), a
 * {data, shape}, or an output of an earlier run() passed back (it carries its shape). */
export type InputValue = TensorData | TensorInput;

/** An output: a typed array of its dtype carrying `shape`, and `data` (itself), so that both
 * `out.logits[0]` and `const { data, shape } = out.logits` work. */
export type Output<T extends TensorData = TensorData> = T & { readonly shape: number[]; readonly data: T };
/** Each possible output array type: narrow with `instanceof` (e.g. `out.logits instanceof Float32Array`). */
export type AnyOutput = Output<Float32Array> | Output<BigInt64Array> | Output<Int32Array> | Output<Uint8Array> | Output<Int8Array>;

/** An input or output as the file declares it; a dynamic dim appears by its name (see `dims`). */
export interface TensorSpec {
  name: string;
  dtype: Dtype;
  shape: (number | string)[];
}

/** The file's metadata plus how this load runs it. */
export interface ModelInfo {
  producer: { name: string; version: string; torch: string };
  abi_version: number;
  /** The kernel build in the file (export's simd=): "relaxed" needs relaxedSimdSupported(). Absent in older files (baseline). */
  simd?: "baseline" | "relaxed";
  /** The exported module's class name. */
  model: string;
  /** Each dynamic dim's range, given at export (dynamic_shapes). */
  dims: Record<string, { min: number; max: number }>;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  /** ATen ops and kernel calls of the exported graph, with their counts. */
  ops: Record<string, number>;
  kernel_calls: Record<string, number>;
  flops: number;
  /** Threads this load runs on (1 in a page that is not cross-origin isolated). */
  threads: number;
  sharedMemory: boolean;
  fileBytes: number;
  /** Milliseconds the warm-up at load took (`LoadOptions.warmUp`); null when it did not run. */
  warmUpMs: number | null;
  /** The file's layout (memory, variants, size programs): read by the loader itself. */
  [field: string]: unknown;
}

export interface LoadOptions {
  /** Threads per call (default 1); a browser page needs cross-origin isolation for more than 1. */
  threads?: number;
  /** Names the model in error messages (default "model"). */
  source?: string;
  /** Limit for loading and for each run(), in ms (default 10000; 0 or Infinity: none). */
  timeoutMs?: number;
  /** Run the model once on zero inputs at load (default true), so that V8 has compiled its kernels
   * with its optimizing compiler before the first run() (without it the first runs can be 1.5-2x
   * slow). Skipped for models over 1 GFLOP per run; `info.warmUpMs` says what it cost. */
  warmUp?: boolean;
}

/** Model.profile()'s result: the outputs, each kernel call's time in plan order, the whole call's. */
export interface Profile {
  outputs: Record<string, AnyOutput>;
  /** op: the kernel (kernel_abi.def's name, e.g. "CONV2D"); word: the record's first plan word. */
  steps: { op: string; word: number; ms: number }[];
  /** The whole call in the Worker (inputs in, every kernel, outputs out), in ms. */
  ms: number;
}

export interface Model {
  readonly info: ModelInfo;
  /** Runs the model on inputs named as in `info.inputs`; resolves to the outputs by name. Rejects
   * with ModelInputError for a wrong name, dtype or shape, ModelTimeoutError past `timeoutMs`. */
  run(inputs: Record<string, InputValue>): Promise<Record<string, AnyOutput>>;
  /** run() with each kernel timed: one call per plan record, each between two performance.now()
   * reads (a few microseconds of overhead per record; coarser clocks in a page that is not
   * cross-origin isolated). For finding where the time goes; run() itself stays one call. */
  profile(inputs: Record<string, InputValue>): Promise<Profile>;
  /** Frees the model's Workers; later run() calls reject. */
  close(): void;
}

/** Loads an exported .wasm (its bytes). Rejects with ModelFileError for a file that is not a valid
 * export, is damaged, or does not finish loading within `timeoutMs`. */
export function loadModel(bytes: ArrayBuffer | Uint8Array, options?: LoadOptions): Promise<Model>;

/** Whether this engine runs relaxed SIMD, which files exported with simd="relaxed" need (Chrome/Edge
 * 114+, Node.js 22+ or 20 with --experimental-wasm-relaxed-simd; not Safari). Fetch the
 * simd="relaxed" file when true, the simd="baseline" one otherwise. */
export function relaxedSimdSupported(): boolean;

/** The file is not a valid torch_wasm_backend export (or is damaged). */
export class ModelFileError extends Error {
  constructor(message: string);
  name: "ModelFileError";
}
/** run()'s inputs do not match the model (name, dtype, shape or a dim's range). */
export class ModelInputError extends Error {
  constructor(message: string);
  name: "ModelInputError";
}
/** run() exceeded `timeoutMs`; the model was stopped and must be loaded again. */
export class ModelTimeoutError extends Error {
  constructor(message: string);
  name: "ModelTimeoutError";
}
