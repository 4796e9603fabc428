"""Explain demo: which ATen nodes of a small model run in wasm, which in eager and why.

    python examples/explain_demo.py
    cd examples && python -m torch_wasm_backend explain explain_demo:build [--json]
"""
import torch
import torch.nn as nn

import torch_wasm_backend as twb


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x)).mean(dim=(2, 3))
        # sort has no wasm lowering: it runs in eager and splits the graph in two partitions
        y = torch.sort(y, dim=-1).values
        return self.fc(y).softmax(-1)


def build():
    """The factory for the command line: (model, example_args)."""
    return Net().eval(), (torch.randn(2, 3, 16, 16),)


if __name__ == "__main__":
    model, args = build()
    print(twb.explain(model, *args))
