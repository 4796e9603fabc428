// Per-record A/B of exported files of the same model (profile_records.py): every file loaded in ONE
// Node.js process, warmed up, then ROUNDS rounds alternating the files, each round one Model.profile()
// (each plan record its own timed run_plan call) and one plain run per file. Writes per file the
// median of each record's times and of the plain runs, and checks the files' first outputs bit for bit
// against the first file's.
// usage: node ab_records.mjs CONFIG.json   ({loader, threads, rounds, input: {name, file, shape}, files, out};
// file_threads: each file's own thread count instead, e.g. one file at [1, 2] for its 2-thread scaling)
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { loadModel } = await import(pathToFileURL(config.loader).href);
const bytes = readFileSync(config.input.file);
const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
const feeds = { [config.input.name]: { data, shape: config.input.shape } };
const models = [];
for (const [k, f] of config.files.entries())
  models.push(await loadModel(readFileSync(f), { threads: config.file_threads ? config.file_threads[k] : config.threads, timeoutMs: 0 }));
const first = [];
for (const m of models) first.push(Object.values(await m.run(feeds))[0]);
const differ = first.map((o) => o.reduce((n, v, i) => n + (Object.is(v, first[0][i]) ? 0 : 1), 0));
for (let i = 0; i < 10; i++) for (const m of models) { await m.run(feeds); await m.profile(feeds); }
const res = config.files.map(() => ({ steps: null, runs: [] }));
for (let r = 0; r < config.rounds; r++) {
  for (let k = 0; k < models.length; k++) {
    const p = await models[k].profile(feeds);
    if (!res[k].steps) res[k].steps = p.steps.map((s) => ({ op: s.op, word: s.word, ms: [] }));
    p.steps.forEach((s, i) => res[k].steps[i].ms.push(s.ms));
    const t0 = performance.now();
    await models[k].run(feeds);
    res[k].runs.push(performance.now() - t0);
  }
}
const med = (a) => { const s = [...a].sort((p, q) => p - q); return s[s.length >> 1]; };
writeFileSync(config.out, JSON.stringify(config.files.map((file, k) => ({
  file, run_ms: med(res[k].runs), outputs_differing: differ[k],
  steps: res[k].steps.map((s) => ({ op: s.op, word: s.word, ms: med(s.ms) })) }))));
for (const m of models) m.close();
process.exit(0);
