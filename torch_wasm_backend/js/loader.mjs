// Loads a model exported by torch_wasm_backend.export() in Node.js 20 or a browser:
//
//   import { loadModel } from "./loader.mjs";
//   const model = await loadModel(bytes, { threads: 2 });
//   const { output } = await model.run({ x: new Float32Array(...) });
//
// Node.js: the plan runs on the calling thread, pool threads are worker_threads on a shared memory.
// Browser: the plan runs in a Worker (controller.mjs): a page's main thread may not block. Threads
// need cross-origin isolation (COOP: same-origin + COEP: require-corp headers); without it the
// loader runs one thread on an unshared memory and says why on the console.
import { checkInputs, createRunner, isNode, ModelFileError, ModelInputError, parseFile, unsharedModuleBytes, verifyHash } from "./core.mjs";

export { ModelFileError, ModelInputError };

async function compile(bytes, source) {
  try { return await WebAssembly.compile(bytes); }
  catch (e) { throw new ModelFileError(`${source} is not a valid wasm module for this engine: ${e.message}`); }
}

/**
 * @param {ArrayBuffer|Uint8Array} bytes  the exported .wasm
 * @param {{threads?: number, source?: string}} options  threads: 1 (default) or more
 * @returns {Promise<{run(inputs: Object<string, Float32Array>): Promise<Object<string, Float32Array>>, info: object, close(): void}>}
 */
export async function loadModel(bytes, options = {}) {
  const source = options.source || "model";
  let threads = Math.max(1, Math.floor(options.threads || 1));
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
  const module = await compile(shared ? file.bytes.subarray(0, file.metadataStart) : unsharedModuleBytes(file), source);
  const info = { ...meta, threads, sharedMemory: shared, fileBytes: file.bytes.length };

  if (isNode) {
    const runner = await createRunner(module, file, threads, shared);
    return {
      info,
      async run(inputs) { return runner.run(checkInputs(meta, inputs)); },
      close() { runner.close(); },
    };
  }

  const worker = new Worker(new URL("./controller.mjs", import.meta.url), { type: "module" });
  const pending = new Map();
  let nextId = 1, failed = null;
  const ready = new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => {
      if (data.type === "ready") return resolve();
      const p = pending.get(data.id);
      if (data.type === "error" && !p) return reject(Object.assign(new Error(data.message), { name: data.name }));
      pending.delete(data.id);
      if (data.type === "result") p.resolve(data.outputs);
      else p.reject(Object.assign(new Error(data.message), { name: data.name }));
    };
    worker.onerror = (e) => { failed = e.message || "worker failed to load"; reject(new Error(`torch_wasm_backend worker: ${failed}`)); for (const p of pending.values()) p.reject(new Error(failed)); };
  });
  // The controller re-parses the bytes it gets (cheap) and instantiates the module compiled here.
  worker.postMessage({ type: "init", module, bytes: file.bytes, source, threads, shared });
  await ready;
  return {
    info,
    run(inputs) {
      let checked;
      try { checked = checkInputs(meta, inputs); } catch (e) { return Promise.reject(e); }
      if (failed) return Promise.reject(new Error(`torch_wasm_backend worker failed: ${failed}`));
      const id = nextId++;
      return new Promise((resolve, reject) => { pending.set(id, { resolve, reject }); worker.postMessage({ type: "run", id, inputs: checked }); });
    },
    close() { worker.postMessage({ type: "close" }); },
  };
}
