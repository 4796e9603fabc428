"""Exports a small CNN to examples/browser/model.wasm (or DIR/model.wasm) for index.html:

    python examples/browser/export_model.py [DIR]
    python -m torch_wasm_backend serve examples/browser     # then open http://127.0.0.1:8000/
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn

import torch_wasm_backend as twb

HERE = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
x = torch.randn(1, 3, 32, 32)
meta = twb.export(model, (x,), HERE / "model.wasm")
# The page checks its output against eager on this input (a fixed ramp it can build itself).
ramp = torch.arange(x.numel(), dtype=torch.float32).reshape(x.shape) / x.numel() - 0.5
with torch.no_grad():
    (HERE / "expected.json").write_text(str(model(ramp).flatten().tolist()))
print(f"wrote {HERE / 'model.wasm'} ({(HERE / 'model.wasm').stat().st_size} bytes); "
      f"inputs {[(i['name'], i['shape']) for i in meta['inputs']]}")
