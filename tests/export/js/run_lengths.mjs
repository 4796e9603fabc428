// Test driver: node run_lengths.mjs <loader.mjs> <manifest.json> -> prints the report of
// lengths.mjs as one JSON line (model files are named relative to the manifest's folder).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { runManifest } from "./lengths.mjs";

const [loaderPath, manifestPath] = process.argv.slice(2);
const { loadModel } = await import(pathToFileURL(loaderPath).href);
const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
const report = await runManifest(loadModel, (file) => readFileSync(join(dirname(manifestPath), file)), manifest);
console.log(JSON.stringify(report));
