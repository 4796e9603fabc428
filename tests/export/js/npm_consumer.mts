// A program using the packed npm package by its name, as a user would. tsc (strict) type-checks it
// against the package's index.d.ts and compiles it to npm_consumer.mjs; Node runs that:
//   node npm_consumer.mjs <model.wasm> <threads> <runs.json> -> one JSON line
//   {"inputs": [names], "runs": [{name: {shape, data}}], "errors": {"file": "...", "input": "..."},
//    "profile": {"ops": [kernel per step], "same": profile()'s outputs equal the last run's}}
// runs.json is run_sizes.mjs's format: a list of {input name: {dtype, shape, data: [numbers]}}.
import { readFileSync } from "node:fs";
import { loadModel, ModelFileError, ModelInputError, type AnyOutput, type Model, type Profile, type TensorData } from "torch-wasm-backend";

type RunSpec = Record<string, { dtype: "float32" | "int64" | "int32" | "bool"; shape: number[]; data: number[] }>;
const typed: Record<RunSpec[string]["dtype"], (d: number[]) => TensorData> = {
  float32: (d) => Float32Array.from(d), int32: (d) => Int32Array.from(d), bool: (d) => Uint8Array.from(d),
  int64: (d) => BigInt64Array.from(d, (v) => BigInt(v)),
};
const numbers = (a: AnyOutput): number[] => (a instanceof BigInt64Array ? Array.from(a, Number) : Array.from(a as ArrayLike<number>));

const [modelPath, threads, runsPath] = process.argv.slice(2);
const model: Model = await loadModel(readFileSync(modelPath), { threads: Number(threads), source: modelPath });
const runs: { [name: string]: { shape: number[]; data: number[] } }[] = [];
let last: Record<string, { data: TensorData; shape: number[] }> = {};
for (const run of JSON.parse(readFileSync(runsPath, "utf8")) as RunSpec[]) {
  last = Object.fromEntries(Object.entries(run).map(([name, t]) => [name, { data: typed[t.dtype](t.data), shape: t.shape }]));
  const outputs = await model.run(last);
  runs.push(Object.fromEntries(Object.entries(outputs).map(([name, a]) => [name, { shape: a.shape, data: numbers(a) }])));
}
// The last run again, each kernel timed: the same outputs, one step per kernel call.
const profiled: Profile = await model.profile(last);
const same = Object.entries(runs[runs.length - 1]).every(([name, o]) => JSON.stringify(numbers(profiled.outputs[name])) === JSON.stringify(o.data));

// The error classes are the ones the package throws (instanceof works across its modules).
const errors: Record<string, string> = {};
try { await loadModel(new Uint8Array([1, 2, 3])); } catch (e) { if (e instanceof ModelFileError) errors.file = e.name; }
try { await model.run({}); } catch (e) { if (e instanceof ModelInputError) errors.input = e.name; }
model.close();
console.log(JSON.stringify({ inputs: model.info.inputs.map((i) => i.name), runs, errors, profile: { ops: profiled.steps.map((s) => s.op), same } }));

// Never called: misuse the declarations must reject (tsc fails on an unused @ts-expect-error).
export function misuse(m: Model): void {
  // @ts-expect-error: an input is a typed array or {data, shape}, not a plain array
  void m.run({ ids: [1, 2, 3] });
  // @ts-expect-error: loadModel takes the file's bytes, not its path
  void loadModel("model.wasm");
  // @ts-expect-error: threads is a number
  void loadModel(new Uint8Array(0), { threads: "2" });
  // @ts-expect-error: an output's shape is read-only
  void m.run({}).then((out) => { out.logits.shape = [1]; });
}
