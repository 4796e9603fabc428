// A pool thread (Node.js worker_threads or a browser Worker): instantiates the model's module on the
// shared memory, sets its own stack, and parks in worker_loop until the main instance shuts the pool
// down. The main instance hands it tasks through the shared memory (kernels_cpp/threadpool.cpp).
import { isNode } from "./core.mjs";

async function onMessage(handler) {
  if (isNode) {
    const { parentPort } = await import("node:worker_threads");
    parentPort.once("message", handler);
    return (m) => parentPort.postMessage(m);
  }
  self.onmessage = (e) => handler(e.data);
  return (m) => self.postMessage(m);
}

const post = await onMessage(({ module, memory, workerId, stackTop }) => {
  let ex;
  try {
    ex = new WebAssembly.Instance(module, { env: { memory } }).exports;
    ex._initialize();
    ex.stackRestore(stackTop);  // each instance needs its own stack region (stacks grow down)
    // worker_loop returns 1 after an idle second (the wasmtime host re-arms a time limit there;
    // nothing to re-arm here) and 0 on pool_shutdown(). The main thread registered this worker.
    while (ex.worker_loop(workerId, 1000) !== 0) { /* park again */ }
    ex.pool_register_worker(-1);
    post({ type: "exit" });
  } catch (e) {
    if (ex) { ex.pool_abort(); ex.pool_register_worker(-1); }  // a waiting run_plan returns an error, no hang
    post({ type: "error", message: String(e && e.message || e) });
  }
  if (isNode) process.exit(0);
  else self.close();
});
