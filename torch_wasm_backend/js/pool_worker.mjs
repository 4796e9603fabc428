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
    ex.worker_loop(workerId);   // returns on pool_shutdown()
    post({ type: "exit" });
  } catch (e) {
    if (ex) ex.pool_abort();    // lets a waiting run_plan return an error instead of hanging
    post({ type: "error", message: String(e && e.message || e) });
  }
  if (isNode) process.exit(0);
  else self.close();
});
