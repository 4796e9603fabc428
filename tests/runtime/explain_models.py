"""Model factories for the `python -m torch_wasm_backend explain module:factory` tests: each returns
(model, example_args)."""
import torch
import torch.nn as nn


def small_cnn():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    return model, (torch.randn(2, 3, 16, 16),)


class SortHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        y = torch.sort(self.fc(x), dim=-1).values   # no wasm lowering: runs in eager
        return torch.relu(y)


def with_sort():
    return SortHead().eval(), (torch.randn(3, 6),)


def not_a_pair():
    return nn.Linear(2, 2)
