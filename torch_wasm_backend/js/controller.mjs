// The Worker that runs the plan (a browser Worker or a Node.js worker_thread). run_plan waits
// (memory.atomic.wait32) for the pool threads, which a page's main thread may not do, and a hostile
// or stuck module (a start function, _initialize or run_plan that never returns) must be stoppable:
// the loader terminates this Worker at its time limit.
import { createRunner, isNode, parseFile } from "./core.mjs";

const port = isNode ? (await import("node:worker_threads")).parentPort : self;
let runner = null;

async function handle(data) {
  try {
    if (data.type === "init") {
      const file = parseFile(data.bytes, data.source);
      runner = await createRunner(data.module, file, data.threads, data.shared, data.source, data.warmUp);
      port.postMessage({ type: "ready", id: data.id, warmUpMs: runner.warmUpMs });
    } else if (data.type === "run" || data.type === "profile") {
      const { outputs, shapes, steps, ms } = data.type === "run" ? runner.run(data.inputs) : runner.engine.profile(data.inputs);
      port.postMessage({ type: "result", id: data.id, outputs, shapes, steps, ms }, Object.values(outputs).map((a) => a.buffer));
    } else if (data.type === "close") {
      if (runner) runner.close();
      if (isNode) process.exit(0); else self.close();
    }
  } catch (e) {
    port.postMessage({ type: "error", id: data.id, message: String(e && e.message || e), name: e && e.name });
  }
}

if (isNode) port.on("message", handle);
else self.onmessage = ({ data }) => handle(data);
