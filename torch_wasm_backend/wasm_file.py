"""The exported-model file format: a kernel module (.wasm) with three custom sections appended.

    <kernel module bytes> | "twb.plan" (int32 LE words) | "twb.weights" (raw bytes) | "twb.metadata" (JSON)

Custom sections are ignored by every wasm engine, so the file stays a valid module that instantiates
like the kernel module itself; the metadata can be read without running anything. The metadata
section comes last because it holds `content_hash` = sha256 of every byte before it (kernels + plan
+ weights): a loader re-hashes that prefix to detect a damaged file. The JS loader
(torch_wasm_backend/js/) reads the same layout; keep both in step (FORMAT_VERSION).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .errors import WasmBackendError

FORMAT = "torch_wasm_backend.export"
FORMAT_VERSION = 1
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
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ExportFileError(f"{where}: the file ends inside a section header (truncated file?)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def custom_section(name: str, payload: bytes) -> bytes:
    encoded = name.encode()
    body = _leb128(len(encoded)) + encoded + payload
    return b"\0" + _leb128(len(body)) + body


@dataclass
class ParsedFile:
    data: bytes
    custom: dict[str, bytes]     # custom section name -> payload
    metadata_start: int          # byte offset of the metadata section (the hashed prefix ends here)
    metadata: dict


def build(kernel_module: bytes, metadata: dict, plan_words: bytes, weights: bytes) -> bytes:
    """The exported file. `metadata` gets format fields and content_hash added."""
    if not kernel_module.startswith(WASM_HEADER):
        raise ExportFileError("the kernel module is not a wasm binary; rebuild it with `make kernels`")
    prefix = kernel_module + custom_section(PLAN_SECTION, plan_words) + custom_section(WEIGHTS_SECTION, weights)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata,
            "content_hash": "sha256:" + hashlib.sha256(prefix).hexdigest()}
    return prefix + custom_section(METADATA_SECTION, json.dumps(meta, indent=1).encode())


def parse(data: bytes, source: str = "file", verify_hash: bool = True) -> ParsedFile:
    """Walks the sections; raises ExportFileError naming what is wrong and what to do."""
    if not data.startswith(WASM_HEADER):
        raise ExportFileError(f"{source} is not a WebAssembly module (no '\\0asm' version-1 header); "
                              "pass a file written by torch_wasm_backend.export(...)")
    custom: dict[str, bytes] = {}
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
        if section_id == 0:
            name_len, name_at = _read_leb128(data, pos, source)
            name = bytes(data[name_at:name_at + name_len]).decode(errors="replace")
            custom[name] = bytes(data[name_at + name_len:pos + size])
            if name == METADATA_SECTION:
                metadata_start = start
        pos += size
    if METADATA_SECTION not in custom:
        raise ExportFileError(
            f"{source} is a wasm module but not a torch_wasm_backend export (no '{METADATA_SECTION}' "
            "custom section); create one with torch_wasm_backend.export(model, args, path)")
    try:
        meta = json.loads(custom[METADATA_SECTION])
    except ValueError as e:
        raise ExportFileError(f"{source}: the metadata section is not valid JSON ({e}); re-export the model") from e
    check_compatible(meta, source)
    for name in (PLAN_SECTION, WEIGHTS_SECTION):
        if name not in custom:
            raise ExportFileError(f"{source} has no '{name}' section; re-export the model")
    if verify_hash:
        digest = "sha256:" + hashlib.sha256(data[:metadata_start]).hexdigest()
        if digest != meta.get("content_hash"):
            raise ExportFileError(
                f"{source} is damaged: its content hash {digest[:23]}... does not match the "
                f"{meta.get('content_hash', '')[:23]}... recorded at export; re-export or copy it again")
    return ParsedFile(data, custom, metadata_start, meta)


def check_compatible(meta: dict, source: str = "file") -> None:
    """Refuses files of another format version (their layout or plan encoding may differ)."""
    producer = meta.get("producer", {})
    made_by = f"{producer.get('name', '?')} {producer.get('version', '?')}"
    if meta.get("format") != FORMAT:
        raise ExportFileError(f"{source}: unknown format {meta.get('format')!r} (made by {made_by}); "
                              f"this loader reads {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ExportFileError(
            f"{source} was written by {made_by} in export format version {meta.get('format_version')}; "
            f"this torch_wasm_backend reads version {FORMAT_VERSION}. Re-export the model with this "
            f"version, or load it with the version that wrote it.")


def read_metadata(path) -> dict:
    """The metadata of an exported file, without instantiating it (hash not checked)."""
    with open(path, "rb") as f:
        return parse(f.read(), str(path), verify_hash=False).metadata
