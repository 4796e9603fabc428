// Browser only: the Worker that runs the plan. A page's main thread may not block, but run_plan
// waits (memory.atomic.wait32) for the pool threads, so the main instance lives here.
import { createRunner, parseFile } from "./core.mjs";

let runner = null;
self.onmessage = async ({ data }) => {
  try {
    if (data.type === "init") {
      const file = parseFile(data.bytes, data.source);
      runner = await createRunner(data.module, file, data.threads, data.shared);
      self.postMessage({ type: "ready" });
    } else if (data.type === "run") {
      const outputs = runner.run(data.inputs);
      self.postMessage({ type: "result", id: data.id, outputs }, Object.values(outputs).map((a) => a.buffer));
    } else if (data.type === "close") {
      if (runner) runner.close();
      self.close();
    }
  } catch (e) {
    self.postMessage({ type: "error", id: data.id, message: String(e && e.message || e), name: e && e.name });
  }
};
