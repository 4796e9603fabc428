// Loads a model exported by torch_wasm_backend.export() in Node.js 20 or a browser:
//
//   import { loadModel } from "./loader.mjs";
//   const model = await loadModel(bytes, { threads: 2 });
//   const { output } = await model.run({ x: new Float32Array(...) });
//   const { logits } = await model.run({ input_ids: { data: BigInt64Array.from(ids, BigInt), shape: [1, ids.length] } });
//
// Inputs: a typed array of the input's dtype (Float32Array, BigInt64Array or Int32Array for int64,
// Int32Array, Uint8Array for bool and uint8, Int8Array for int8), or {data, shape} (needed for inputs with dynamic dims). Outputs:
// typed arrays of their dtype, each with `.shape` (and `.data`, itself).
//
// The file is untrusted input: parsed and validated here (core.mjs), compiled here, instantiated and
// run in a Worker (controller.mjs; a worker_thread in Node) that is terminated when loading or a call
// passes its time limit (timeoutMs, default 10 s). Pool threads are Workers of that Worker on a shared
// memory. Threads in a browser need cross-origin isolation (COOP: same-origin + COEP: require-corp
// headers); without it the loader runs one thread on an unshared memory and says why on the console.
// close() frees the Workers; a model that is garbage-collected without close() frees them too.
import { checkInputs, checkInterface, isNode, ModelFileError, ModelInputError, ModelTimeoutError, parseFile, relaxedSimdSupported, unsharedModuleBytes, verifyHash } from "./core.mjs";

export { ModelFileError, ModelInputError, ModelTimeoutError, relaxedSimdSupported };

const DEFAULT_TIMEOUT_MS = 10000;
const ERRORS = { ModelFileError, ModelInputError, ModelTimeoutError };

async function compile(bytes, source) {
  try { return await WebAssembly.compile(bytes); }
  catch (e) { throw new ModelFileError(`${source} is not a valid wasm module for this engine: ${e.message}`); }
}

async function startController() {
  const url = new URL("./controller.mjs", import.meta.url);
  if (isNode) {
    const { Worker } = await import("node:worker_threads");
    const w = new Worker(url);
    return { post: (m) => w.postMessage(m), onMessage: (f) => w.on("message", f), onError: (f) => { w.on("error", f); w.on("exit", (code) => f(new Error(`worker exited (code ${code})`))); },
             terminate: () => w.terminate(), ref: () => w.ref(), unref: () => w.unref() };
  }
  const w = new Worker(url, { type: "module" });
  return { post: (m) => w.postMessage(m), onMessage: (f) => { w.onmessage = (e) => f(e.data); }, onError: (f) => { w.onerror = (e) => f(new Error(e.message || "worker failed to load")); },
           terminate: () => w.terminate(), ref: () => {}, unref: () => {} };
}

// A model dropped without close(): its Worker (and the pool Workers inside it) is terminated.
const collected = new FinalizationRegistry((state) => {
  if (!state.closed) { state.closed = true; state.worker.terminate(); }
});

/** Each output typed array carries its `shape`, and `data` (itself), so that both `out.logits[0]` and
 * `const { data, shape } = out.logits` work (the same {data, shape} form run() takes). */
function withShapes(outputs, shapes) {
  for (const [name, array] of Object.entries(outputs)) Object.defineProperties(array, { shape: { value: shapes[name], enumerable: false }, data: { value: array, enumerable: false } });
  return outputs;
}

/** The Worker's message handling and calls with a time limit. Defined apart from loadModel so that
 * the handlers (kept alive by the running Worker) do not share a closure scope with the model
 * object: then dropping the model lets the FinalizationRegistry terminate the Worker. */
function connect(worker, source, timeoutMs) {
  const limited = timeoutMs > 0 && timeoutMs !== Infinity;
  const state = { worker, pending: new Map(), failed: null, closed: false, busy: 0 };
  const { pending } = state;
  const stop = (reason) => {
    state.failed = state.failed || reason;
    if (!state.closed) { state.closed = true; worker.terminate(); }
    for (const p of pending.values()) p.reject(p.error(reason));
    pending.clear();
  };
  // The Worker keeps a Node process alive only while loading or running a call.
  const busy = (delta) => { state.busy += delta; if (state.busy > 0) worker.ref(); else worker.unref(); };
  worker.onMessage((data) => {
    const p = pending.get(data.id);
    if (!p) return;
    pending.delete(data.id);
    clearTimeout(p.timer);
    busy(-1);
    if (data.type === "error") p.reject(new (ERRORS[data.name] || Error)(data.message));
    else p.resolve(data.type === "result" ? p.result(data) : data);
  });
  worker.onError((e) => { if (!state.closed) stop(`the worker failed: ${e && e.message || e}`); });
  const call = (message, timeoutError, result = (data) => withShapes(data.outputs, data.shapes)) => new Promise((resolve, reject) => {
    if (state.failed) return reject(new Error(`${source}: unusable (${state.failed}); load it again`));
    if (state.closed) return reject(new Error(`${source}: the model was closed; load it again`));
    const p = { resolve, reject, result, error: (why) => new Error(`${source}: ${why}`), timer: null };
    if (limited) p.timer = setTimeout(() => { p.error = timeoutError; stop(`timed out after ${timeoutMs} ms`); }, timeoutMs);
    pending.set(message.id, p);
    busy(1);
    worker.post(message);
  });
  return { state, call, stop };
}

/**
 * @param {ArrayBuffer|Uint8Array} bytes  the exported .wasm
 * @param {{threads?: number, source?: string, timeoutMs?: number, warmUp?: boolean}} options  threads: 1
 *   (default) or more; timeoutMs: limit for loading and for each run() (default 10000; 0 or Infinity:
 *   none); warmUp: run the model once on zeros at load so that its first run() runs V8's optimized
 *   code (default true; see Engine.warmUp in core.mjs); info.warmUpMs says what it cost (null: skipped)
 * @returns {Promise<{run(inputs: Object<string, TypedArray|{data: TypedArray, shape: number[]}>): Promise<Object<string, TypedArray & {shape: number[]}>>, info: object, close(): void}>}
 */
export async function loadModel(bytes, options = {}) {
  const source = options.source || "model";
  let threads = Math.max(1, Math.floor(options.threads || 1));
  const timeoutMs = options.timeoutMs === undefined ? DEFAULT_TIMEOUT_MS : options.timeoutMs;
  if (typeof timeoutMs !== "number" || !(timeoutMs >= 0)) throw new TypeError(`timeoutMs: ${timeoutMs}; pass milliseconds (0 for no limit)`);
  const warmUp = options.warmUp === undefined ? true : options.warmUp;
  if (typeof warmUp !== "boolean") throw new TypeError(`warmUp: ${warmUp}; pass true (run the model once on zeros at load, the default) or false`);
  const file = parseFile(bytes, source);
  await verifyHash(file, source);
  const meta = file.meta;
  let shared = true;
  if (!isNode && !globalThis.crossOriginIsolated) {
    if (threads > 1)
      console.warn(`torch_wasm_backend: running ${source} with 1 thread instead of ${threads}: the page is not cross-origin isolated, so it cannot share memory between threads. Serve it with the headers 'Cross-Origin-Opener-Policy: same-origin' and 'Cross-Origin-Embedder-Policy: require-corp'.`);
    threads = 1;
    shared = false;
  }
  const module = await compile(shared ? file.bytes.subarray(0, file.moduleEnd) : unsharedModuleBytes(file), source);
  checkInterface(module, source);
  const info = { ...meta, threads, sharedMemory: shared, fileBytes: file.bytes.length };

  const { state, call, stop } = connect(await startController(), source, timeoutMs);
  let nextId = 1;
  // The controller re-parses the bytes it gets (cheap) and instantiates the module compiled here.
  try {
    const ready = await call({ type: "init", id: 0, module, bytes: file.bytes, source, threads, shared, warmUp },
      () => new ModelFileError(`${source} did not finish loading within ${timeoutMs} ms (timeoutMs); its start function, _initialize or the warm-up run loops forever or runs too long. Re-export the model, or pass a larger timeoutMs (or warmUp: false) if the file is trusted`));
    info.warmUpMs = ready.warmUpMs;
  } catch (e) {
    stop(`loading failed: ${e.message}`);
    throw e instanceof ModelFileError ? e : new ModelFileError(`${source}: loading failed: ${e.message}`);
  }
  const request = (type, inputs, result) => {
    let checked;
    try { checked = checkInputs(meta, inputs); } catch (e) { return Promise.reject(e); }
    return call({ type, id: nextId++, inputs: checked },
      () => new ModelTimeoutError(`${source}: ${type}() exceeded the time limit of ${timeoutMs} ms (timeoutMs); the model was stopped: load it again`), result);
  };
  const model = {
    info,
    run: (inputs) => request("run", inputs),
    // run() with each kernel timed (Engine.profile in core.mjs): {outputs, steps: [{op, word, ms}], ms}
    profile: (inputs) => request("profile", inputs, (data) => ({ outputs: withShapes(data.outputs, data.shapes), steps: data.steps, ms: data.ms })),
    close() {
      if (state.closed) return;
      state.closed = true;
      collected.unregister(state);
      state.worker.post({ type: "close" });
      state.worker.unref();
    },
  };
  collected.register(model, state, state);
  return model;
}
