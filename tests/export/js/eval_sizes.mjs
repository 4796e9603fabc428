// Test driver: node eval_sizes.mjs <sizes.mjs> <cases.json> -> prints {"values": [[...], ...]}: for each case
// {programs, dims}, every program's value by the JS evaluator (NaN as null), to compare with size_program.py.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [sizesPath, casesPath] = process.argv.slice(2);
const { checkPrograms, evaluate } = await import(pathToFileURL(sizesPath).href);
const out = [];
for (const { programs, dims } of JSON.parse(readFileSync(casesPath, "utf8"))) {
  checkPrograms(programs, dims, (where, problem) => { throw new Error(`${where} ${problem}`); });
  out.push(evaluate(programs, dims).map((v) => (Number.isNaN(v) ? null : v)));
}
console.log(JSON.stringify({ values: out }));
