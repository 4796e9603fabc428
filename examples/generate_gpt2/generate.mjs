// Greedy generation in Node.js 20 with the decoding step export.py wrote: the prompt goes in as one
// step, then one token per step; each step's present_key_values is the next step's past_key_values.
//
//   node examples/generate_gpt2/generate.mjs [DIR] [threads]
//
// Prints the tokens and whether they equal model.generate()'s (from DIR/prompt.json); the last line
// is JSON ({"tokens": [...], "expected": [...], "match": true}). Exit code 1 on a mismatch.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadModel } from "../../torch_wasm_backend/js/loader.mjs";

const dir = process.argv[2] || dirname(fileURLToPath(import.meta.url));
const threads = Number(process.argv[3] || 1);
const { prompt, max_new_tokens: newTokens, expected } = JSON.parse(readFileSync(join(dir, "prompt.json"), "utf8"));
const model = await loadModel(readFileSync(join(dir, "gpt2_step.wasm")), { threads, source: "gpt2_step.wasm" });

// The first past is one position of zeros (the dummy the step masks out): the file's past_key_values
// shape with its dynamic dim (past_length) set to 1.
const pastInfo = model.info.inputs.find((i) => i.name === "past_key_values");
const pastShape = pastInfo.shape.map((d) => (typeof d === "number" ? d : 1));
let past = { data: new Float32Array(pastShape.reduce((a, b) => a * b, 1)), shape: pastShape };

let ids = BigInt64Array.from(prompt, BigInt);
let positions = BigInt64Array.from(prompt, (_, i) => BigInt(i));  // the prompt's positions: 0 ... n - 1
const tokens = [];
try {
  for (let step = 0; step < newTokens; step++) {
    const shape = [1, ids.length];
    const out = await model.run({ input_ids: { data: ids, shape }, position_ids: { data: positions, shape }, past_key_values: past });
    const { data: logits, shape: [, n, vocab] } = out.logits;
    let best = 0;  // argmax over the last position's logits (the first maximum, as torch.argmax)
    for (let v = 1; v < vocab; v++) if (logits[(n - 1) * vocab + v] > logits[(n - 1) * vocab + best]) best = v;
    tokens.push(best);
    ids = BigInt64Array.of(BigInt(best));
    positions = BigInt64Array.of(positions[positions.length - 1] + 1n);
    const { data, shape: presentShape } = out.present_key_values;  // a Float32Array with .data and .shape
    past = { data, shape: presentShape };
  }
} finally {
  model.close();
}
const match = tokens.length === expected.length && tokens.every((t, i) => t === expected[i]);
console.log(`prompt:     ${prompt.join(" ")}`);
console.log(`generated:  ${tokens.join(" ")}`);
console.log(`generate(): ${expected.join(" ")}  (${match ? "same" : "DIFFERENT"})`);
console.log(JSON.stringify({ tokens, expected, match }));
process.exitCode = match ? 0 : 1;
