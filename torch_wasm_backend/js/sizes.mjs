// Size programs of an exported model with dynamic dims: the JS twin of torch_wasm_backend/size_program.py
// (see its docstring for the token set; keep the two in step). A program is a postfix list of tokens:
// numbers, "$dim", "#k" (program k < this one), binary and unary operators. Integers stay exact below
// 2**53 (sizes, strides and byte offsets of a 4 GiB memory are far below); // and % round toward minus
// infinity as in Python; a division by zero gives NaN, which makes a guard false and a needed value an error.

const BINARY = new Set(["+", "-", "*", "//", "%", "/", "**", "min", "max", "<", "<=", ">", ">=", "==", "!=", "and", "or"]);
const UNARY = new Set(["neg", "abs", "not", "floor", "ceil", "trunc", "round", "f32"]);
const MAX_TOKENS = 1 << 22, MAX_POWER = 64;

/** Validates a file's programs (untrusted): known tokens, defined dims, earlier references, a sound stack. */
export function checkPrograms(programs, dims, fail) {
  if (!Array.isArray(programs)) fail("exprs", "is not a JSON list");
  let total = 0;
  programs.forEach((program, k) => {
    const where = `exprs[${k}]`;
    if (!Array.isArray(program) || program.length === 0) fail(where, "is not a non-empty JSON list");
    total += program.length;
    if (total > MAX_TOKENS) fail("exprs", `hold more than ${MAX_TOKENS} tokens`);
    let depth = 0;
    for (const t of program) {
      if (typeof t === "number") {
        if (!Number.isFinite(t) || (Number.isInteger(t) && Math.abs(t) > 2 ** 53)) fail(where, `holds the number ${t}`);
        depth++;
      } else if (typeof t === "string" && t[0] === "$" && Object.hasOwn(dims, t.slice(1))) depth++;
      else if (typeof t === "string" && /^#\d+$/.test(t) && Number(t.slice(1)) < k) depth++;
      else if (BINARY.has(t)) { if (--depth < 1) fail(where, `pops an empty stack at '${t}'`); }
      else if (UNARY.has(t)) { if (depth < 1) fail(where, `pops an empty stack at '${t}'`); }
      else fail(where, `holds the unknown token ${JSON.stringify(String(t)).slice(0, 40)}`);
    }
    if (depth !== 1) fail(where, `leaves ${depth} values on the stack, not 1`);
  });
}

const f32 = new Float32Array(1), i32 = new Int32Array(f32.buffer);
function floorDiv(a, b) {
  if (b === 0) return NaN;
  let q = Math.floor(a / b);
  if (!Number.isInteger(a) || !Number.isInteger(b)) return q;
  const r = a - q * b;  // the float quotient may round across an integer: make a - q*b lie in [0, b)
  if (b > 0 ? r < 0 : r > 0) q -= 1;
  else if (b > 0 ? r >= b : r <= b) q += 1;
  return q;
}
function roundHalfEven(a) { const r = Math.round(a); return Math.abs(a % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r; }
const cmp = (a, b, r) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : r ? 1 : 0);
const BIN = {
  "+": (a, b) => a + b, "-": (a, b) => a - b, "*": (a, b) => a * b, "//": floorDiv,
  "%": (a, b) => (b === 0 ? NaN : a - floorDiv(a, b) * b), "/": (a, b) => (b === 0 ? NaN : a / b),
  "**": (a, b) => (Number.isInteger(b) && b >= 0 && b <= MAX_POWER ? a ** b : NaN),
  min: (a, b) => Math.min(a, b), max: (a, b) => Math.max(a, b),
  "<": (a, b) => cmp(a, b, a < b), "<=": (a, b) => cmp(a, b, a <= b), ">": (a, b) => cmp(a, b, a > b),
  ">=": (a, b) => cmp(a, b, a >= b), "==": (a, b) => cmp(a, b, a === b), "!=": (a, b) => cmp(a, b, a !== b),
  and: (a, b) => cmp(a, b, a && b), or: (a, b) => cmp(a, b, a || b),
};
const UN = {
  neg: (a) => -a, abs: Math.abs, not: (a) => (Number.isNaN(a) ? NaN : a ? 0 : 1), floor: Math.floor, ceil: Math.ceil,
  trunc: Math.trunc, round: roundHalfEven, f32: (a) => { f32[0] = a; return i32[0]; },
};

/** Every program's value for these dim values (programs already checked). */
export function evaluate(programs, dims) {
  const values = [];
  for (const program of programs) {
    const stack = [];
    for (const t of program) {
      if (typeof t === "number") stack.push(t);
      else if (t[0] === "$") stack.push(dims[t.slice(1)]);
      else if (t[0] === "#") stack.push(values[Number(t.slice(1))]);
      else if (UNARY.has(t)) stack.push(UN[t](stack.pop()));
      else { const b = stack.pop(); stack.push(BIN[t](stack.pop(), b)); }
    }
    values.push(stack[0]);
  }
  return values;
}

/** A size field's value: an int as it is, "#k" program k's value, a dim's name its value. */
export function resolve(v, dims, values) {
  if (typeof v === "number") return v;
  return v[0] === "#" ? values[Number(v.slice(1))] : dims[v];
}
