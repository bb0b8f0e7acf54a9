"""Model architectures of the zoo: plain ReLU MLPs with state-dict keys ``fc1.weight``, ``fc1.bias``, ...

``mlp((64, 256, 256, 10))`` is x -> fc1 -> ReLU -> fc2 -> ReLU -> fc3 (logits); ``fc_i.weight`` has shape
``(widths[i], widths[i-1])``. Initialisation is PyTorch's ``nn.Linear`` default (Kaiming-uniform with
a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases), drawn from the global torch
generator, so ``torch.manual_seed`` fixes it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hmu_diag.errors import OptionError


class MLP(nn.Module):
    """Fully connected ReLU network with layers named ``fc1 .. fcL``."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise OptionError(f"MLP widths {widths}: need at least an input and an output width, all >= 1")
        self.widths = widths
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            self.add_module(f"fc{i}", nn.Linear(n_in, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self.children())
        for layer in layers[:-1]:
            x = torch.relu(layer(x))
        return layers[-1](x)


def mlp(widths: Sequence[int]) -> MLP:
    """A new :class:`MLP` with the given layer widths (input, hidden..., output)."""
    return MLP(widths)


def n_params(model: nn.Module) -> int:
    """Number of scalar parameters."""
    return sum(p.numel() for p in model.parameters())
