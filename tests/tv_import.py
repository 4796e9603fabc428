"""Imports torchvision next to the CPU torch wheel, for its model definitions only.

PyPI's torchvision wheel is built against CUDA torch: its C++ extension (`torchvision/_C.so`, which
holds the detection ops nms, roi_align, deform_conv2d, ...) does not load next to torch's CPU wheel.
torchvision notices that (`torchvision.extension._has_ops()` is False) everywhere except in
`torchvision/_meta_registrations.py`, which registers fake kernels for `torchvision::nms` and
`torchvision::qnms` unconditionally, so `import torchvision` raises "operator torchvision::nms does
not exist". The classification, video and segmentation model definitions are plain Python and need
none of those ops.

`import_torchvision()` imports torchvision with `torch.library.register_fake` wrapped, for the
duration of that import only, so that a fake kernel for a `torchvision::` op that does not exist is
skipped (there is nothing for it to describe); every other registration goes through untouched, and
the wrapper is removed afterwards. Import this module before `timm`, which imports torchvision.
"""
from __future__ import annotations

import contextlib
import logging

import torch
import torch.library

log = logging.getLogger("torch_wasm_backend.tests")


@contextlib.contextmanager
def _skip_fakes_for_missing_torchvision_ops(skipped: list):
    real = torch.library.register_fake

    def register_fake(op, func=None, /, *args, **kwargs):
        if isinstance(op, str) and op.startswith("torchvision::"):
            name = op.split("::", 1)[1].split(".")[0]
            if not hasattr(torch.ops.torchvision, name):
                skipped.append(op)
                return func if func is not None else (lambda fn: fn)
        return real(op, func, *args, **kwargs)

    torch.library.register_fake = register_fake
    try:
        yield
    finally:
        torch.library.register_fake = real


def import_torchvision():
    """torchvision, imported even where its C++ ops cannot load (see the module docstring)."""
    skipped: list = []
    with _skip_fakes_for_missing_torchvision_ops(skipped):
        import torchvision
        import torchvision.models  # noqa: F401
        import torchvision.models.video  # noqa: F401
    if skipped:
        log.info("torchvision %s: C++ ops not loaded; skipped fake kernels for %s",
                 torchvision.__version__, ", ".join(skipped))
    return torchvision


torchvision = import_torchvision()
