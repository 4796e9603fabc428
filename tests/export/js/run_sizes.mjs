// Test driver: node run_sizes.mjs <loader.mjs> <model.wasm> <threads> <runs.json> -> prints one JSON line
// {"runs": [{name: {shape, data}} | {"error": "Name: message"}, ...]}. runs.json is a list of runs in
// the format of runs.mjs (which runs them).
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { runAll } from "./runs.mjs";

const [loaderPath, modelPath, threads, runsPath] = process.argv.slice(2);
const { loadModel } = await import(pathToFileURL(loaderPath).href);
const model = await loadModel(readFileSync(modelPath), { threads: Number(threads), source: modelPath });
const results = await runAll(model, JSON.parse(readFileSync(runsPath, "utf8")));
model.close();
console.log(JSON.stringify({ runs: results }));
