"""The exported-model file format: a kernel module (.wasm) with three custom sections appended.

    <kernel module bytes> | "twb.plan" (int32 LE words) | "twb.weights" (raw bytes) | "twb.metadata" (JSON)

Custom sections are ignored by every wasm engine, so the file stays a valid module that instantiates
like the kernel module itself; the metadata can be read without running anything. The metadata
section comes last. Its `content_hash` is the sha256 of the WHOLE file with the 64 hex digits of
the hash itself replaced by '0's (format version 2; version 1 hashed only the bytes before the
metadata, so its metadata could be damaged unnoticed: such files are refused with "re-export").

Format version 3 adds dtypes (float32, int64, int32, bool; uint8 and int8 since quantized models) and dynamic dims: `dims` names each
dynamic dim with its range; a size field (a shape entry, stride or offset) is an int, a dim's name,
or "#k", the value of size program k (`exprs`, see size_program.py); the plan comes in `variants`,
each with the guard selecting it (`when`), its words in the plan section and `patches` (plan word
-> program whose value it takes), and the offsets and strides of the inputs and outputs. Version 2
files (float32, static) are read as one variant.

The hash detects damage, it is not a signature: whoever edits a file can recompute it. So every
structural field of the metadata is validated (`validate`) before anything runs: offsets and sizes
inside the file's memory layout, strides that keep each tensor inside its region, known dtypes,
unique names, sane counts. Parsing is linear (section sizes are LEB128 u32s of at most 5 bytes, as
in the wasm spec). The JS loader (torch_wasm_backend/js/core.mjs) implements the same checks; keep
both in step (FORMAT_VERSION).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from . import size_program
from .errors import WasmBackendError

FORMAT = "torch_wasm_backend.export"
FORMAT_VERSION = 3
SIMD_BUILDS = ("baseline", "relaxed")  # the kernel builds a file may carry (metadata "simd")
READABLE_VERSIONS = (2, 3)
DTYPES = {"float32": 4, "int64": 8, "int32": 4, "bool": 1, "uint8": 1, "int8": 1}   # name -> bytes per element
MAX_VARIANTS = 16
MAX_SOURCE_CHARS = 400  # one entry of a variant's "sources" (where a record came from)
HASH_PREFIX = "sha256:"
HASH_PLACEHOLDER = HASH_PREFIX + "0" * 64
MEMORY_LIMIT = 65536 * 65536          # wasm32: 4 GiB
MAX_TENSORS = 4096                    # inputs or outputs of one model
MAX_DIMS = 32
MAX_WORKER_STACK = 64 * 2**20
# An output is read from the arena; only a broadcast (stride-0) view can hold more values than the
# arena has bytes/4. Up to this much is allowed for those, so a file cannot make a loader allocate
# gigabytes for a tiny model.
BROADCAST_OUTPUT_BYTES = 64 * 2**20
PLAN_SECTION = "twb.plan"
WEIGHTS_SECTION = "twb.weights"
METADATA_SECTION = "twb.metadata"
WASM_HEADER = b"\0asm\x01\0\0\0"


class ExportFileError(WasmBackendError):
    """A file that is not a usable torch_wasm_backend export (foreign, truncated, damaged, or from
    an incompatible producer)."""


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_leb128(data, pos: int, where: str) -> tuple[int, int]:
    """An unsigned LEB128 u32: at most 5 bytes (wasm spec), so a hostile length costs O(1)."""
    result = 0
    for shift in range(0, 35, 7):
        if pos >= len(data):
            raise ExportFileError(f"{where}: the file ends inside a section header (truncated file?)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= 2**32:
                break
            return result, pos
    raise ExportFileError(f"{where}: a section header at byte {pos} holds a malformed or over-long "
                          "size (not a u32 LEB128); the file is damaged: re-export or copy it again")


def custom_section(name: str, payload: bytes) -> bytes:
    encoded = name.encode()
    body = _leb128(len(encoded)) + encoded + payload
    return b"\0" + _leb128(len(body)) + body


@dataclass
class ParsedFile:
    data: bytes
    custom: dict[str, bytes]     # custom section name -> payload
    module_end: int              # byte offset of the plan section: data[:module_end] is the module
    metadata_start: int          # byte offset of the metadata section (the last one)
    metadata: dict


def build(kernel_module: bytes, metadata: dict, plan_words: bytes, weights: bytes) -> bytes:
    """The exported file. `metadata` gets format fields and content_hash added."""
    if not kernel_module.startswith(WASM_HEADER):
        raise ExportFileError("the kernel module is not a wasm binary; rebuild it with `make kernels`")
    prefix = kernel_module + custom_section(PLAN_SECTION, plan_words) + custom_section(WEIGHTS_SECTION, weights)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata, "content_hash": HASH_PLACEHOLDER}
    data = bytearray(prefix + custom_section(METADATA_SECTION, json.dumps(meta, indent=1).encode()))
    at = data.rindex(HASH_PLACEHOLDER.encode()) + len(HASH_PREFIX)
    data[at:at + 64] = hashlib.sha256(data).hexdigest().encode()
    return bytes(data)


def content_hash(data: bytes, metadata_start: int, recorded) -> str:
    """sha256 of the file with the recorded hash's hex digits zeroed ('' if the recorded value is
    not one well-formed hash appearing exactly once in the metadata section)."""
    if not (isinstance(recorded, str) and len(recorded) == len(HASH_PLACEHOLDER)
            and recorded.startswith(HASH_PREFIX)):
        return ""
    needle = recorded.encode()
    at = data.find(needle, metadata_start)
    if at < 0 or data.find(needle, at + 1) >= 0:
        return ""
    h = hashlib.sha256()
    view = memoryview(data)
    h.update(view[:at + len(HASH_PREFIX)])
    h.update(b"0" * 64)
    h.update(view[at + len(needle):])
    return HASH_PREFIX + h.hexdigest()


def parse(data: bytes, source: str = "file", verify_hash: bool = True) -> ParsedFile:
    """Walks the sections; raises ExportFileError naming what is wrong and what to do."""
    if not data.startswith(WASM_HEADER):
        raise ExportFileError(f"{source} is not a WebAssembly module (no '\\0asm' version-1 header); "
                              "pass a file written by torch_wasm_backend.export(...)")
    custom: dict[str, bytes] = {}
    starts: list[tuple[int, str]] = []   # (offset, custom section name or "") of every section
    metadata_start = -1
    pos = len(WASM_HEADER)
    while pos < len(data):
        start = pos
        section_id = data[pos]
        size, pos = _read_leb128(data, pos + 1, source)
        if pos + size > len(data):
            raise ExportFileError(
                f"{source} is truncated: a section at byte {start} needs {size} bytes, only "
                f"{len(data) - pos} remain (file is {len(data)} bytes). Copy or download it again.")
        if metadata_start >= 0:
            raise ExportFileError(f"{source}: a section follows the '{METADATA_SECTION}' section (byte "
                                  f"{start}); it must be the last one. The file is damaged: re-export it")
        if section_id == 0:
            name_len, name_at = _read_leb128(data, pos, source)
            if name_at + name_len > pos + size:
                raise ExportFileError(f"{source}: a custom section name at byte {start} runs past its "
                                      "section; the file is damaged: re-export or copy it again")
            name = bytes(data[name_at:name_at + name_len]).decode(errors="replace")
            if name in custom and name.startswith("twb."):
                raise ExportFileError(f"{source} has two '{name}' sections; the file is damaged: re-export it")
            custom[name] = bytes(data[name_at + name_len:pos + size])
            if name == METADATA_SECTION:
                metadata_start = start
        starts.append((start, name if section_id == 0 else ""))
        pos += size
    if METADATA_SECTION not in custom:
        raise ExportFileError(
            f"{source} is a wasm module but not a torch_wasm_backend export (no '{METADATA_SECTION}' "
            "custom section); create one with torch_wasm_backend.export(model, args, path)")
    try:
        meta = json.loads(custom[METADATA_SECTION])
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        raise ExportFileError(f"{source}: the metadata section is not valid JSON ({type(e).__name__}); "
                              "re-export the model") from e
    if not isinstance(meta, dict):
        raise ExportFileError(f"{source}: the metadata is a JSON {type(meta).__name__}, not an object; re-export the model")
    check_compatible(meta, source)
    for name in (PLAN_SECTION, WEIGHTS_SECTION):
        if name not in custom:
            raise ExportFileError(f"{source} has no '{name}' section; re-export the model")
    # Both loaders compile data[:module_end]: nothing of the module may hide after the plan.
    if [name for _, name in starts[-3:]] != [PLAN_SECTION, WEIGHTS_SECTION, METADATA_SECTION]:
        raise ExportFileError(f"{source}: its last sections are not {PLAN_SECTION}, {WEIGHTS_SECTION}, "
                              f"{METADATA_SECTION} in this order; the file is damaged: re-export it")
    if verify_hash:
        recorded = meta.get("content_hash")
        digest = content_hash(data, metadata_start, recorded)
        if digest != recorded:
            raise ExportFileError(
                f"{source} is damaged: its content hash {digest[:23] or '(none)'}... does not match the "
                f"{str(recorded)[:23]}... recorded at export; re-export or copy it again")
    if meta.get("format_version") == 2:
        meta = _from_version_2(meta)
    validate(meta, len(custom[PLAN_SECTION]), len(custom[WEIGHTS_SECTION]), source)
    return ParsedFile(data, custom, starts[-3][0], metadata_start, meta)


def check_compatible(meta: dict, source: str = "file") -> None:
    """Refuses files of another format version (their layout or plan encoding may differ)."""
    producer = meta.get("producer")
    producer = producer if isinstance(producer, dict) else {}
    made_by = f"{producer.get('name', '?')} {producer.get('version', '?')}"
    if meta.get("format") != FORMAT:
        raise ExportFileError(f"{source}: unknown format {meta.get('format')!r} (made by {made_by}); "
                              f"this loader reads {FORMAT!r}")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ExportFileError(
            f"{source} was written by {made_by} in export format version {meta.get('format_version')}; "
            f"this torch_wasm_backend reads versions {', '.join(map(str, READABLE_VERSIONS))}. Re-export "
            "the model with this version, or load it with the version that wrote it.")


class _Check:
    """Field checks that raise ExportFileError naming the field (e.g. "outputs[1].strides")."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str):
        raise ExportFileError(f"{self.source}: metadata field {where} {problem}; the file is damaged or "
                              "was not written by torch_wasm_backend.export: re-export the model")

    def int(self, obj: dict, key: str, where: str, lo: int = 0, hi: int = MEMORY_LIMIT) -> int:
        value = obj.get(key) if isinstance(obj, dict) else None
        field = key if where == "metadata" else f"{where}.{key}"
        if type(value) is not int:
            self.fail(field, f"is {json.dumps(value)[:40]}, not an integer")
        if not lo <= value <= hi:
            self.fail(field, f"= {value} is outside [{lo}, {hi}]")
        return value

    def obj(self, obj: dict, key: str, kind: type, where: str = "metadata"):
        value = obj.get(key)
        if not isinstance(value, kind):
            self.fail(f"{where}.{key}" if where != "metadata" else key, f"is not a JSON {kind.__name__}")
        return value


def _from_version_2(meta: dict) -> dict:
    """A version-2 file's metadata (float32, static, one plan) in version 3's structure."""
    if not all(isinstance(meta.get(k), list) and all(isinstance(t, dict) for t in meta[k])
               for k in ("inputs", "outputs")) or not isinstance(meta.get("layout"), dict):
        return meta  # (validate names what is wrong)
    meta = dict(meta, dims={}, exprs=[], outputs_by_name=False)
    meta["variants"] = [{
        "when": None, "plan_offset": 0, "plan_words": meta["layout"].get("plan_words"), "patches": [], "sources": [],
        "inputs": [None if t.get("offset") is None else {"offset": t.get("offset"), "strides": t.get("strides")}
                   for t in meta["inputs"]],
        "outputs": [{"offset": t.get("offset"), "strides": t.get("strides")} for t in meta["outputs"]]}]
    strip = lambda t: {k: v for k, v in t.items() if k not in ("offset", "strides")}
    meta["inputs"] = [strip(t) for t in meta["inputs"]]
    meta["outputs"] = [strip(t) for t in meta["outputs"]]
    return meta


def _non_overlapping(shape: list, strides: list) -> bool:
    """True if no two elements of the view share memory (so writing an input through it is sound)."""
    span = 1
    for size, stride in sorted((d for d in zip(shape, strides) if d[0] > 1), key=lambda d: d[1]):
        if stride < span:
            return False
        span = stride * size
    return True


def _size_field(check: _Check, value, where: str, dims: dict, n_exprs: int):
    if type(value) is int:
        if not 0 <= value <= MEMORY_LIMIT:
            check.fail(where, f"= {value} is outside [0, 2**32]")
    elif not (isinstance(value, str) and (value in dims or (value[:1] == "#" and value[1:].isdigit()
                                                            and int(value[1:]) < n_exprs))):
        check.fail(where, f"is {json.dumps(value)[:40]}, not an integer, a dim's name or a program reference")


def validate(meta: dict, plan_bytes: int, weights_bytes: int, source: str = "file") -> None:
    """Checks every structural field against the file's own sections and memory layout, so that a
    loader can copy weights and plan, write inputs (into the arena) and read outputs (from the arena
    or the weights) without leaving the regions the layout gives them: [heap_base, error_at, weights,
    arena (inputs, outputs), plan] < static_bytes <= 4 GiB. Tensor views whose fields depend on
    dims are checked for each call's sizes (check_views). Raises ExportFileError naming the first
    bad field."""
    check = _Check(source)
    producer = check.obj(meta, "producer", dict)
    for key in ("name", "version"):
        if not isinstance(producer.get(key), str):
            check.fail(f"producer.{key}", "is not a string")
    if not isinstance(meta.get("model"), str):
        check.fail("model", "is not a string")
    check.int(meta, "abi_version", "metadata", 0, 2**31 - 1)
    if meta.get("simd", "baseline") not in SIMD_BUILDS:  # absent in files written before relaxed SIMD
        check.fail("simd", f"is not one of {', '.join(SIMD_BUILDS)}")
    for key in ("ops", "kernel_calls"):
        counts = check.obj(meta, key, dict)
        for op, n in counts.items():
            if type(n) is not int or n < 0:
                check.fail(f"{key}[{op!r}]", "is not a count")
    if type(meta.get("flops")) not in (int, float) or not 0 <= meta["flops"] < float("inf"):
        check.fail("flops", "is not a non-negative number")

    mem, lay = check.obj(meta, "memory", dict), check.obj(meta, "layout", dict)
    heap_base = check.int(mem, "heap_base", "memory")
    error_at = check.int(lay, "error_at", "layout", heap_base)
    weights_at = check.int(lay, "weights_at", "layout", error_at + 4)
    if check.int(lay, "weights_bytes", "layout") != weights_bytes:
        check.fail("layout.weights_bytes", f"= {lay['weights_bytes']} but the weights section has {weights_bytes} bytes")
    arena_at = check.int(lay, "arena_at", "layout", weights_at + weights_bytes)
    check.int(lay, "arena_bytes", "layout")
    plan_at = check.int(lay, "plan_at", "layout", arena_at + lay["arena_bytes"])
    if check.int(lay, "plan_words", "layout") * 4 != plan_bytes:
        check.fail("layout.plan_words", f"= {lay['plan_words']} but the plan section has {plan_bytes} bytes")
    static_bytes = check.int(mem, "static_bytes", "memory", plan_at)
    for key, value in (("error_at", error_at), ("weights_at", weights_at), ("arena_at", arena_at), ("plan_at", plan_at)):
        if value % 4:
            check.fail(f"layout.{key}", f"= {value} is not 4-byte aligned")
    check.int(mem, "initial_pages", "memory", -(-static_bytes // 65536), MEMORY_LIMIT // 65536)
    stack = check.int(mem, "worker_stack_bytes", "memory", 4096, MAX_WORKER_STACK)
    if stack % 16:
        check.fail("memory.worker_stack_bytes", f"= {stack} is not 16-byte aligned")

    dims = check.obj(meta, "dims", dict)
    for name, r in dims.items():
        if not name.isidentifier():
            check.fail(f"dims[{name[:40]!r}]", "is not a valid dim name")
        lo = check.int(r if isinstance(r, dict) else {}, "min", f"dims.{name}", 0, 2**31 - 1)
        check.int(r, "max", f"dims.{name}", lo, 2**31 - 1)
    size_program.check(meta.get("exprs"), dims, check.fail)
    n_exprs = len(meta["exprs"])
    if type(meta.get("outputs_by_name")) is not bool:
        check.fail("outputs_by_name", "is not true or false")

    inputs, outputs = check.obj(meta, "inputs", list), check.obj(meta, "outputs", list)
    if len(inputs) > MAX_TENSORS or not 1 <= len(outputs) <= MAX_TENSORS:
        check.fail("inputs/outputs", f"count ({len(inputs)} inputs, {len(outputs)} outputs) is not sane")
    for kind, specs in (("inputs", inputs), ("outputs", outputs)):
        names = set()
        for k, spec in enumerate(specs):
            where = f"{kind}[{k}]"
            if not isinstance(spec, dict):
                check.fail(where, "is not a JSON object")
            if not isinstance(spec.get("name"), str) or not spec["name"]:
                check.fail(f"{where}.name", "is not a non-empty string")
            if spec["name"] in names:
                check.fail(f"{where}.name", f"{spec['name']!r} is used twice among the {kind}")
            names.add(spec["name"])
            if spec.get("dtype") not in DTYPES:
                check.fail(f"{where}.dtype", f"is {json.dumps(spec.get('dtype'))[:40]}, not one of {', '.join(DTYPES)}")
            shape = check.obj(spec, "shape", list, where)
            if len(shape) > MAX_DIMS:
                check.fail(f"{where}.shape", f"has {len(shape)} dimensions (at most {MAX_DIMS})")
            for d, size in enumerate(shape):
                _size_field(check, size, f"{where}.shape[{d}]", dims, n_exprs)
    bound = {size for spec in inputs for size in spec["shape"] if isinstance(size, str) and size in dims}
    if set(dims) - bound:
        check.fail("dims", f"name {sorted(set(dims) - bound)}, which no input's shape determines")

    variants = check.obj(meta, "variants", list)
    if not 1 <= len(variants) <= MAX_VARIANTS:
        check.fail("variants", f"has {len(variants)} entries (1 to {MAX_VARIANTS})")
    for j, variant in enumerate(variants):
        where = f"variants[{j}]"
        if not isinstance(variant, dict):
            check.fail(where, "is not a JSON object")
        when = variant.get("when")
        if when is not None and not (type(when) is int and 0 <= when < n_exprs):
            check.fail(f"{where}.when", "is not null or a program index")
        offset = check.int(variant, "plan_offset", where, 0, lay["plan_words"])
        n_words = check.int(variant, "plan_words", where, 0, lay["plan_words"] - offset)
        if plan_at + 4 * n_words > static_bytes:
            check.fail(f"{where}.plan_words", f"= {n_words} words do not fit below memory.static_bytes")
        patches = check.obj(variant, "patches", list, where)
        for patch in patches:
            if not (isinstance(patch, list) and len(patch) == 2 and type(patch[0]) is int and type(patch[1]) is int
                    and 0 <= patch[0] < n_words and 0 <= patch[1] < n_exprs):
                check.fail(f"{where}.patches", f"holds {json.dumps(patch)[:40]}, not [plan word, program index]")
        previous = -1
        for source in check.obj(variant, "sources", list, where):
            if not (isinstance(source, list) and len(source) == 2 and type(source[0]) is int
                    and previous < source[0] < n_words and isinstance(source[1], str)
                    and len(source[1]) <= MAX_SOURCE_CHARS):
                check.fail(f"{where}.sources", f"holds {json.dumps(source)[:40]}, not [increasing plan word, text]")
            previous = source[0]
        for kind, specs in (("inputs", inputs), ("outputs", outputs)):
            views = check.obj(variant, kind, list, where)
            if len(views) != len(specs):
                check.fail(f"{where}.{kind}", f"has {len(views)} entries for {len(specs)} {kind}")
            for k, (view, spec) in enumerate(zip(views, specs)):
                at = f"{where}.{kind}[{k}]"
                if view is None and kind == "inputs":
                    continue  # an input the model does not read
                if not isinstance(view, dict):
                    check.fail(at, "is not a JSON object")
                _size_field(check, view.get("offset"), f"{at}.offset", dims, n_exprs)
                strides = check.obj(view, "strides", list, at)
                if len(strides) != len(spec["shape"]):
                    check.fail(f"{at}.strides", f"has {len(strides)} entries for {len(spec['shape'])} dimensions")
                for d, stride in enumerate(strides):
                    _size_field(check, stride, f"{at}.strides[{d}]", dims, n_exprs)
    if not dims:  # every view is known now: check them at load time
        for j in range(len(variants)):
            check_views(meta, *views_at(meta, j, {}, []), source)


def source_of_word(variant: dict, word: int) -> str | None:
    """What the plan word belongs to ("aten::embedding at File ..."), if the file says."""
    found = None
    for start, text in variant["sources"]:
        if start > word:
            break
        found = text
    return found


def views_at(meta: dict, variant: int, dims: dict[str, int], values: list) -> tuple[list, list]:
    """The concrete inputs and outputs ({name, dtype, shape, offset, strides}; offset None: an
    unused input) of a variant at these dim values and size-program values."""
    resolve = lambda v: size_program.resolve(v, dims, values)
    chosen = meta["variants"][variant]
    out = []
    for kind in ("inputs", "outputs"):
        views = []
        for spec, view in zip(meta[kind], chosen[kind]):
            entry = {"name": spec["name"], "dtype": spec["dtype"], "shape": [resolve(s) for s in spec["shape"]],
                     "offset": None, "strides": None}
            if view is not None:
                entry["offset"], entry["strides"] = resolve(view["offset"]), [resolve(s) for s in view["strides"]]
            views.append(entry)
        out.append(views)
    return out[0], out[1]


def check_views(meta: dict, inputs: list, outputs: list, source: str = "file") -> None:
    """Concrete tensor views stay inside their regions: inputs (written) in the arena and not
    overlapping each other or themselves; outputs (read) in the arena or the weights."""
    check = _Check(source)
    lay = meta["layout"]
    arena_at, arena_end = lay["arena_at"], lay["arena_at"] + lay["arena_bytes"]
    weights_at, weights_end = lay["weights_at"], lay["weights_at"] + lay["weights_bytes"]
    written: list[tuple[int, int, str]] = []
    for kind, specs in (("inputs", inputs), ("outputs", outputs)):
        for spec in specs:
            where = f"{kind} {spec['name']!r}"
            if spec["offset"] is None:
                continue
            shape, strides, offset, itemsize = spec["shape"], spec["strides"], spec["offset"], DTYPES[spec["dtype"]]
            for value in [offset, *shape, *strides]:
                if type(value) is not int or not 0 <= value <= MEMORY_LIMIT:
                    check.fail(where, f"has a size, stride or offset of {value!r} (not an integer in [0, 2**32])")
            if offset % itemsize:
                check.fail(where, f"offset {offset} is not aligned to its {itemsize}-byte elements")
            numel = math.prod(shape)
            if numel == 0:
                continue
            if itemsize * numel > max(arena_end - arena_at, BROADCAST_OUTPUT_BYTES):
                check.fail(where, f"shape {shape} holds more values than the activations arena ({arena_end - arena_at} bytes)")
            lo = offset
            hi = offset + itemsize * (1 + sum((size - 1) * stride for size, stride in zip(shape, strides)))
            # Inputs are written: arena only. Outputs are read: arena, or the weights for a model that
            # returns a parameter or constant as it is.
            regions = [(arena_at, arena_end)] + ([(weights_at, weights_end)] if kind == "outputs" else [])
            if not any(start <= lo and hi <= end for start, end in regions):
                check.fail(where, f"covers bytes [{lo}, {hi}), outside the activations arena [{arena_at}, {arena_end})"
                                  + (f" and the weights [{weights_at}, {weights_end})" if kind == "outputs" else ""))
            if kind == "inputs":
                if not _non_overlapping(shape, strides):
                    check.fail(f"{where} strides", "make elements overlap; an input must not alias itself")
                for other_lo, other_hi, other in written:
                    if lo < other_hi and other_lo < hi:
                        check.fail(where, f"overlaps input {other!r} in memory")
                written.append((lo, hi, spec["name"]))


def read_metadata(path) -> dict:
    """The metadata of an exported file, without instantiating it (hash not checked)."""
    with open(path, "rb") as f:
        return parse(f.read(), str(path), verify_hash=False).metadata
