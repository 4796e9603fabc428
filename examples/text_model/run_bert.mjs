// Runs the file examples/text_model/export_bert.py wrote, in Node.js 20, at a few lengths:
//   node examples/text_model/run_bert.mjs [bert.wasm]
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { loadModel } from "../../torch_wasm_backend/js/loader.mjs";

const path = process.argv[2] || fileURLToPath(new URL("./bert.wasm", import.meta.url));
const model = await loadModel(readFileSync(path), { threads: 2 });
console.log("dims:", JSON.stringify(model.info.dims), "inputs:", model.info.inputs.map((i) => `${i.name} ${i.dtype}[${i.shape}]`).join(", "));
for (const length of [1, 17, 128]) {
  const ids = Array.from({ length }, (_, i) => (i * 37 + 101) % 1000);     // token ids from a tokenizer
  const { last_hidden_state } = await model.run({
    input_ids: { data: BigInt64Array.from(ids, BigInt), shape: [1, length] },   // Int32Array works too
    attention_mask: { data: new BigInt64Array(length).fill(1n), shape: [1, length] },
  });
  console.log(`length ${length}: last_hidden_state [${last_hidden_state.shape}], first values ${Array.from(last_hidden_state.slice(0, 3), (v) => v.toFixed(4))}`);
}
try {
  await model.run({ input_ids: { data: new Int32Array(200), shape: [1, 200] }, attention_mask: { data: new Int32Array(200), shape: [1, 200] } });
} catch (e) {
  console.log(`length 200: ${e.name}: ${e.message}`);
}
model.close();
