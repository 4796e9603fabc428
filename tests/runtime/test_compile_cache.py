"""The compile cache loads only entries its owner wrote: private directories, owner and mode checks,
HMAC-authenticated entries bound to their module, cleanup of stale temp files (issue 16 part 3).
In-process on a fresh engine (a compile of the kernel module takes ~0.6 s here); the cross-process
behaviour is in test_limits_and_observability.py."""
import hashlib
import logging
import os
import stat
import time

import pytest
import wasmtime

from torch_wasm_backend import compile_cache as cc
from torch_wasm_backend.runtime import KERNEL_BUILDS
from torch_wasm_backend import wasm_layer
from torch_wasm_backend.wasm_layer import ENGINE_SETTINGS

FOREIGN_UID = 12345
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root (CI runs as root)")


@pytest.fixture(scope="module")
def engine():
    return wasm_layer.engine(epoch_interruption=False)


@pytest.fixture(scope="module")
def kernels():
    return KERNEL_BUILDS["baseline"].read_bytes()


@pytest.fixture
def root(tmp_path, monkeypatch):
    directory = tmp_path / "a" / "b" / "cache"
    monkeypatch.setenv(cc.ENV, str(directory))
    return directory


def load(engine, kernels):
    module, origin = cc.load_module(engine, kernels, ENGINE_SETTINGS)
    assert "run_plan" in {e.name for e in module.exports}  # always the kernel module
    return origin


def entry(root):
    entries = list(root.glob("kernels-*.cwasm"))
    assert len(entries) == 1, entries
    return entries[0]


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_directories_are_private_whatever_the_umask(engine, kernels, root):
    old = os.umask(0)
    try:
        assert load(engine, kernels) == "compiled+cached"
    finally:
        os.umask(old)
    for directory in (root, root.parent, root.parent.parent):
        assert mode(directory) == 0o700, directory
    assert mode(root / cc.KEY_FILE) == 0o600
    assert mode(entry(root)) == 0o600
    assert load(engine, kernels) == "cache"


def test_tampered_entry_with_a_recomputed_checksum_is_rejected_and_rebuilt(engine, kernels, root, caplog):
    load(engine, kernels)
    path = entry(root)
    good = path.read_bytes()
    header = len(cc.MAGIC)
    payload = bytearray(good[header + 32:])
    payload[len(payload) // 2] ^= 0xFF
    # What an attacker could do against a plain checksum: patch the code, recompute the sha256.
    path.write_bytes(cc.MAGIC + hashlib.sha256(payload).digest() + payload)
    with caplog.at_level(logging.WARNING, "torch_wasm_backend"):
        assert load(engine, kernels) == "compiled+cached"
    assert "authentication failed" in caplog.text
    assert path.read_bytes() != bytes(cc.MAGIC + hashlib.sha256(payload).digest() + payload)
    assert load(engine, kernels) == "cache"


def test_truncated_and_garbage_entries_are_rebuilt(engine, kernels, root):
    load(engine, kernels)
    path = entry(root)
    good = path.read_bytes()
    for bad in (good[: len(good) // 2], b"not a cache entry", b""):
        path.write_bytes(bad)
        assert load(engine, kernels) == "compiled+cached"
        assert load(engine, kernels) == "cache"


def _other_module_entry(engine, root, monkeypatch):
    """A valid entry (written by this cache, under its key) of a different module that imports the
    same memory: what made the old cache raise KeyError '_initialize' out of the user's call."""
    other = wasmtime.wat2wasm('(module (import "env" "memory" (memory 1 1 shared)) (func (export "f")))')
    module, origin = cc.load_module(engine, bytes(other), ENGINE_SETTINGS)
    assert origin == "compiled+cached"
    return root / f"kernels-{cc.cache_key(bytes(other), ENGINE_SETTINGS)}.cwasm", bytes(module.serialize())


def test_valid_entry_of_another_module_is_rebuilt_not_surfaced(engine, kernels, root, monkeypatch, caplog):
    load(engine, kernels)
    path = entry(root)
    other_path, other_payload = _other_module_entry(engine, root, monkeypatch)
    # 1. copied under the kernel module's name: its MAC is bound to the other module's key.
    other_path.replace(path)
    with caplog.at_level(logging.WARNING, "torch_wasm_backend"):
        assert load(engine, kernels) == "compiled+cached"
    assert "authentication failed" in caplog.text
    # 2. even with a correct MAC for this name (a stolen key): the module's imports/exports differ.
    entry_key = path.name[len("kernels-"):-len(".cwasm")]
    key = (root / cc.KEY_FILE).read_bytes()
    path.write_bytes(cc.MAGIC + cc._mac(key, entry_key, other_payload) + other_payload)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "torch_wasm_backend"):
        assert load(engine, kernels) == "compiled+cached"
    assert "not the kernel module" in caplog.text
    assert load(engine, kernels) == "cache"


@needs_root
def test_entry_owned_by_another_user_is_removed_and_rebuilt(engine, kernels, root, caplog):
    load(engine, kernels)
    path = entry(root)
    os.chown(path, FOREIGN_UID, FOREIGN_UID)
    with caplog.at_level(logging.WARNING, "torch_wasm_backend"):
        assert load(engine, kernels) == "compiled+cached"
    assert f"owned by uid {FOREIGN_UID}" in caplog.text
    assert os.stat(path).st_uid == os.geteuid()
    assert load(engine, kernels) == "cache"


def test_entry_writable_by_others_is_removed_and_rebuilt(engine, kernels, root, caplog):
    load(engine, kernels)
    path = entry(root)
    os.chmod(path, 0o666)
    with caplog.at_level(logging.WARNING, "torch_wasm_backend"):
        assert load(engine, kernels) == "compiled+cached"
    assert "writable by group or others" in caplog.text
    assert mode(path) == 0o600


def test_fifo_in_place_of_an_entry_does_not_block(engine, kernels, root):
    load(engine, kernels)
    path = entry(root)
    path.unlink()
    os.mkfifo(path, 0o600)
    assert load(engine, kernels) == "compiled+cached"
    assert path.is_file()


def test_symlinked_entry_is_not_followed(engine, kernels, root, tmp_path):
    load(engine, kernels)
    path = entry(root)
    target = tmp_path / "elsewhere.cwasm"
    target.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(target)
    assert load(engine, kernels) == "compiled+cached"
    assert not path.is_symlink()
    assert target.exists()  # the link was removed, not what it pointed to


@needs_root
def test_cache_directory_of_another_user_is_not_used(engine, kernels, root, caplog):
    load(engine, kernels)
    before = entry(root).read_bytes()
    os.chown(root, FOREIGN_UID, FOREIGN_UID)
    with caplog.at_level(logging.WARNING, "torch_wasm_backend"):
        assert load(engine, kernels) == "compiled"
    assert "not using the compile cache" in caplog.text and f"owned by uid {FOREIGN_UID}" in caplog.text
    assert entry(root).read_bytes() == before  # another user's directory is left alone


def test_cache_directory_writable_by_others_is_not_used(engine, kernels, root, caplog):
    load(engine, kernels)
    os.chmod(root, 0o777)
    with caplog.at_level(logging.WARNING, "torch_wasm_backend"):
        assert load(engine, kernels) == "compiled"
    assert "writable by group or others" in caplog.text
    os.chmod(root, 0o700)
    assert load(engine, kernels) == "cache"


@pytest.mark.parametrize("damage", [pytest.param("foreign owner", marks=needs_root),
                                    "readable by others", "wrong size"])
def test_untrusted_key_is_replaced_and_entries_rebuilt(engine, kernels, root, damage, caplog):
    load(engine, kernels)
    key_path = root / cc.KEY_FILE
    old_key = key_path.read_bytes()
    if damage == "foreign owner":
        os.chown(key_path, FOREIGN_UID, FOREIGN_UID)
    elif damage == "readable by others":
        os.chmod(key_path, 0o644)
    else:
        key_path.write_bytes(old_key[:8])
    with caplog.at_level(logging.WARNING, "torch_wasm_backend"):
        assert load(engine, kernels) == "compiled+cached"
    assert "replacing the compile cache key" in caplog.text
    assert key_path.read_bytes() != old_key and mode(key_path) == 0o600
    assert os.stat(key_path).st_uid == os.geteuid()
    assert load(engine, kernels) == "cache"


def test_stale_temp_files_of_killed_writers_are_removed(engine, kernels, root):
    load(engine, kernels)
    stale, fresh = root / f"{cc.TMP_PREFIX}999-stale", root / f"{cc.TMP_PREFIX}999-fresh"
    stale.write_bytes(b"half an entry")
    fresh.write_bytes(b"being written right now")
    old = time.time() - cc.STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    assert load(engine, kernels) == "cache"
    assert not stale.exists()
    assert fresh.exists()  # may belong to a writer that is still running
