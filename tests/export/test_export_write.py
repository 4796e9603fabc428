"""export() writes its file safely: through a fresh mkstemp file in the target folder and a rename,
never through a file or symlink planted at a predictable temp name, and leaves no temp file behind
on error (issue 16 part 5)."""
import os
import stat

import pytest
import torch

import torch_wasm_backend as twb
from torch_wasm_backend import exporter


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(5, 3).eval(), (torch.randn(2, 5),)


def test_planted_symlink_at_the_old_temp_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "m.wasm"
    (tmp_path / "m.wasm.tmp").symlink_to(victim)   # the name the old export() wrote through
    model, args = _model()
    twb.export(model, args, path)
    assert victim.read_text() == "precious"
    assert (tmp_path / "m.wasm.tmp").is_symlink()  # left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.wasm", "m.wasm.tmp", "victim.txt"]
    out = twb.load(path)(*args)
    torch.testing.assert_close(out, model(*args).detach(), rtol=1e-5, atol=1e-6)  # float32, other summation order


def test_file_mode_follows_the_umask_and_a_symlink_at_the_target_is_replaced(tmp_path):
    outside = tmp_path / "outside.wasm"
    outside.write_bytes(b"not to be overwritten")
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "m.wasm"
    path.symlink_to(outside)
    old = os.umask(0o027)
    try:
        twb.export(*_model(), path)
    finally:
        os.umask(old)
    assert outside.read_bytes() == b"not to be overwritten"
    assert not path.is_symlink() and path.stat().st_size > 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_no_temp_file_is_left_when_the_write_fails(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(exporter.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        twb.export(*_model(), tmp_path / "m.wasm")
    assert list(tmp_path.iterdir()) == []
