// Runs a loaded model on a list of runs, for the Node driver run_sizes.mjs and the browser page
// browser/lengths.html. A run is {input name: {dtype, shape, data: [numbers]}}; int64 inputs are
// passed as BigInt64Array (or as Int32Array when dtype is "int32-for-int64"), bool as Uint8Array.
// Each result is {output name: {shape, data: [numbers]}}, or {"error": "Name: message"}.
const TYPED = {
  float32: (d) => Float32Array.from(d), int32: (d) => Int32Array.from(d), bool: (d) => Uint8Array.from(d),
  int64: (d) => BigInt64Array.from(d, (v) => BigInt(v)), "int32-for-int64": (d) => Int32Array.from(d),
};

export async function runAll(model, runs) {
  const results = [];
  for (const run of runs) {
    const inputs = {};
    for (const [name, t] of Object.entries(run)) inputs[name] = { data: TYPED[t.dtype](t.data), shape: t.shape };
    try {
      const outputs = await model.run(inputs);
      results.push(Object.fromEntries(Object.entries(outputs).map(([name, a]) => [name, { shape: a.shape, data: Array.from(a, Number) }])));
    } catch (e) {
      results.push({ error: `${e.name}: ${e.message}` });
    }
  }
  return results;
}
