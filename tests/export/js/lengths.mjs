// Shared by the Node driver (run_lengths.mjs) and the browser page (browser/lengths.html): loads each
// model of a manifest written by tests/export/test_text_models.py with the shipped loader, runs it on
// each of its inputs (one length per run) and on its bad inputs, and returns a JSON-able report.
// Tensors travel as {dtype, shape, data: base64 of the little-endian bytes} both ways.
const ARRAYS = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array, bool: Uint8Array };

function decode({ dtype, shape, data }) {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  return { data: new ARRAYS[dtype](bytes.buffer), shape };
}

function encode({ data, shape }) {
  const dtype = Object.keys(ARRAYS).find((k) => data instanceof ARRAYS[k]);
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return { dtype, shape: Array.from(shape), data: btoa(text) };
}

const decodeAll = (inputs) => Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, decode(v)]));

/** manifest: {threads, models: [{name, file, runs: [{input name: tensor}], errors: {case: inputs}}]};
 * fetchBytes(file) -> Uint8Array. Report: {name: {threads, runs: [{output name: tensor}], errors:
 * {case: "ErrorName: message" or "no error"}}}. */
export async function runManifest(loadModel, fetchBytes, manifest) {
  const report = {};
  for (const m of manifest.models) {
    const model = await loadModel(await fetchBytes(m.file), { threads: manifest.threads, source: m.file });
    const entry = { threads: model.info.threads, runs: [], errors: {} };
    try {
      for (const run of m.runs) {
        const outputs = await model.run(decodeAll(run));
        entry.runs.push(Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, encode(v)])));
      }
      for (const [name, inputs] of Object.entries(m.errors || {})) {
        try { await model.run(decodeAll(inputs)); entry.errors[name] = "no error"; }
        catch (e) { entry.errors[name] = `${e.name}: ${e.message}`; }
      }
    } finally {
      model.close();
    }
    report[m.name] = entry;
  }
  return report;
}
