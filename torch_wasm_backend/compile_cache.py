"""On-disk cache of the compiled (native) kernel module, so a new process skips Cranelift.

Location: $TORCH_WASM_BACKEND_CACHE_DIR, else $XDG_CACHE_HOME/torch_wasm_backend, else
~/.cache/torch_wasm_backend; TORCH_WASM_BACKEND_CACHE_DIR=off disables it. An entry is keyed by the
module's sha256, the wasmtime version, the engine settings and the host CPU's features.

An entry is native machine code that `Module.deserialize` runs without checking it, so the cache
only loads code its owner wrote:
- the cache directory is created 0700 and used only if it is owned by the current user and not
  writable by group or others (else: logged, compiled without the cache);
- every entry is authenticated with HMAC-SHA256 under a random key kept in the directory
  (`key`, 0600, checked the same way), over the cache key (so a valid entry of another module does
  not pass) and the payload; a planted or tampered entry, one owned by another user or writable by
  others, is logged, deleted and rebuilt;
- files are opened relative to the checked directory's descriptor, without following symlinks.
Writes are atomic (temp file + rename); temp files older than STALE_TMP_SECONDS (left by killed
writers) are deleted.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import platform
import stat
import time
from importlib.metadata import version
from pathlib import Path

import wasmtime

from .wasm_layer import KERNEL_EXPORTS

log = logging.getLogger("torch_wasm_backend")

MAGIC = b"TWBCACHE2\n"
ENV = "TORCH_WASM_BACKEND_CACHE_DIR"
KEY_FILE = "key"
KEY_BYTES = 32
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 300   # a writer finishes in well under a second; older temp files are orphans
# A deserialized module must look like the kernel module: only `env.memory` imported and the
# functions the wasm layer calls exported, else it is not ours and is rebuilt.
EXPECTED_IMPORTS = [("env", "memory")]
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class _Untrusted(Exception):
    """A file the cache must not use; the message says why."""


def cache_dir() -> Path | None:
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torch_wasm_backend"


def _cpu_features() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cache_key(module_bytes: bytes, engine_settings: str) -> str:
    h = hashlib.sha256()
    for part in (hashlib.sha256(module_bytes).hexdigest(), version("wasmtime"), engine_settings,
                 platform.machine(), _cpu_features()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


def _check_owned(st: os.stat_result, what: str, kind) -> None:
    """Raise _Untrusted unless `st` is a `kind` (stat.S_ISDIR/S_ISREG) owned by us and not
    writable by group or others."""
    if not kind(st.st_mode):
        raise _Untrusted(f"{what} is not a {'directory' if kind is stat.S_ISDIR else 'regular file'}")
    if st.st_uid != os.geteuid():
        raise _Untrusted(f"{what} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _Untrusted(f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")


def _make_private_dirs(directory: Path) -> None:
    """Create `directory` and any missing parents with mode 0700, whatever the umask (os.makedirs
    gives parents the umask's mode)."""
    missing = []
    path = directory
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask, chmod's is not


def _open_root(directory: Path) -> int:
    """A descriptor of the cache directory (created if missing) after checking its owner and mode."""
    _make_private_dirs(directory)
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW)
    try:
        _check_owned(os.fstat(fd), f"cache directory {directory}", stat.S_ISDIR)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_owned(root: int, name: str) -> tuple[bytes, int]:
    """The bytes and permission bits of root/name (no symlinks), which must be a file we own that
    others cannot write. FileNotFoundError if it does not exist."""
    # O_NONBLOCK: a FIFO in its place fails the regular-file check instead of blocking the open.
    fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0), dir_fd=root)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        _check_owned(st, f"cache file {name}", stat.S_ISREG)
        return f.read(), stat.S_IMODE(st.st_mode)


def _write_temp(root: int, data: bytes) -> str:
    """A new 0600 temp file in root holding `data`; its name."""
    tmp = f"{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600, dir_fd=root)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        _unlink(root, tmp)
        raise
    return tmp


def _unlink(root: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=root)
    except OSError:
        pass


def _read_key(root: int) -> bytes:
    key, mode = _read_owned(root, KEY_FILE)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise _Untrusted(f"the key file is accessible to group or others (mode {mode:o})")
    if len(key) != KEY_BYTES:
        raise _Untrusted(f"the key file has {len(key)} bytes, expected {KEY_BYTES}")
    return key


def _mac_key(root: int) -> bytes:
    """The cache's HMAC key: root/key, made (KEY_BYTES random bytes, 0600) if missing; replaced if
    it is not ours, readable or writable by others, or damaged (entries made under the old key then
    fail authentication and are rebuilt)."""
    try:
        return _read_key(root)
    except FileNotFoundError:
        pass
    except (_Untrusted, OSError) as e:
        log.warning("replacing the compile cache key (%s); cached entries will be rebuilt", e)
        _unlink(root, KEY_FILE)
    tmp = _write_temp(root, os.urandom(KEY_BYTES))
    try:
        # link, not replace: when two processes race, both end up with the first one's key.
        os.link(tmp, KEY_FILE, src_dir_fd=root, dst_dir_fd=root, follow_symlinks=False)
    except FileExistsError:
        pass
    finally:
        _unlink(root, tmp)
    return _read_key(root)


def _mac(key: bytes, entry_key: str, payload: bytes) -> bytes:
    return hmac.new(key, MAGIC + entry_key.encode() + b"\0" + payload, hashlib.sha256).digest()


def _remove_stale_temps(root: int) -> None:
    now = time.time()
    for name in os.listdir(root):
        if name.startswith(TMP_PREFIX):
            try:
                if now - os.stat(name, dir_fd=root, follow_symlinks=False).st_mtime > STALE_TMP_SECONDS:
                    os.unlink(name, dir_fd=root)
                    log.info("removed a stale compile cache temp file %s", name)
            except OSError:
                pass


def _check_module(module: wasmtime.Module) -> None:
    imports = [(i.module, i.name) for i in module.imports]
    exports = {e.name for e in module.exports}
    if imports != EXPECTED_IMPORTS or not exports.issuperset(KERNEL_EXPORTS):
        raise _Untrusted(f"the cached module is not the kernel module (imports {imports})")


def _load_entry(engine: wasmtime.Engine, root: int, name: str, entry_key: str, key: bytes):
    """The module in root/name, or None if there is no entry. _Untrusted/ValueError if unusable."""
    try:
        data, _ = _read_owned(root, name)
    except FileNotFoundError:
        return None
    if not data.startswith(MAGIC):
        raise ValueError("bad header")
    mac, payload = data[len(MAGIC):len(MAGIC) + 32], data[len(MAGIC) + 32:]
    if not hmac.compare_digest(mac, _mac(key, entry_key, payload)):
        raise _Untrusted("authentication failed (truncated, corrupted, planted, or made for "
                         "another module or key)")
    module = wasmtime.Module.deserialize(engine, payload)
    _check_module(module)
    return module


def load_module(engine: wasmtime.Engine, module_bytes: bytes, engine_settings: str) -> tuple[wasmtime.Module, str]:
    """The compiled module and where it came from: "cache", "compiled+cached" or "compiled"."""
    directory = cache_dir()
    if directory is None:
        return wasmtime.Module(engine, module_bytes), "compiled"
    try:
        root = _open_root(directory)
    except (_Untrusted, OSError) as e:
        log.warning("not using the compile cache in %s (%s); compiling without it. Fix: use a "
                    "directory only you own and can write (chmod 700), or set %s", directory, e, ENV)
        return wasmtime.Module(engine, module_bytes), "compiled"
    try:
        _remove_stale_temps(root)
        entry_key = cache_key(module_bytes, engine_settings)
        name = f"kernels-{entry_key}.cwasm"
        try:
            key = _mac_key(root)
            module = _load_entry(engine, root, name, entry_key, key)
            if module is not None:
                return module, "cache"
        except (_Untrusted, OSError, ValueError, wasmtime.WasmtimeError) as e:
            log.warning("ignoring compile cache entry %s (%s); rebuilding it", directory / name, e)
            _unlink(root, name)
        module = wasmtime.Module(engine, module_bytes)
        try:
            payload = bytes(module.serialize())
            tmp = _write_temp(root, MAGIC + _mac(_mac_key(root), entry_key, payload) + payload)
            try:
                os.replace(tmp, name, src_dir_fd=root, dst_dir_fd=root)  # atomic: no half entries
            except OSError:
                _unlink(root, tmp)
                raise
            return module, "compiled+cached"
        except (_Untrusted, OSError) as e:
            log.warning("could not write the compile cache in %s (%s); continuing without it", directory, e)
            return module, "compiled"
    finally:
        os.close(root)
