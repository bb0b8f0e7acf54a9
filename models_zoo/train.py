"""Train one zoo model deterministically.

Protocol (one function, :func:`train`): ``torch.manual_seed(seed)`` before building the model (so the
initialisation is fixed), a private ``torch.Generator`` seeded with ``seed`` for the per-epoch shuffles,
``numpy.random.RandomState(seed)`` for the training subset and the label noise, one CPU thread while
training, minibatch SGD (optionally with heavy-ball momentum and L2 weight decay, as in ``torch.optim.SGD``)
on the mean cross-entropy, a constant learning rate, every epoch one pass over a fresh permutation of the
training set (the last batch may be smaller). With the same torch build, the same config gives bit-identical
weights.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from torch import nn

from hmu_diag.errors import OptionError

from .architectures import MLP, mlp
from .data import Dataset, corrupt_labels, stratified_subset


PROTOCOL = " ".join(__doc__.split("\n\n")[1].split())  # the paragraph above, for manifests


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model (with the dataset name)."""

    widths: tuple[int, ...]
    batch_size: int
    lr: float
    epochs: int
    momentum: float = 0.0
    weight_decay: float = 0.0
    label_noise: float = 0.0
    train_fraction: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 1 or self.lr <= 0:
            raise OptionError(f"{self}: batch_size and epochs must be >= 1 and lr > 0")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


@dataclass(frozen=True)
class TrainResult:
    """A trained model and its accuracies (fractions in [0, 1]).

    ``train_accuracy`` is measured on the labels the model was trained on (noisy ones under label noise);
    ``train_accuracy_clean`` on the true labels of the same samples.
    """

    model: MLP
    train_accuracy: float
    train_accuracy_clean: float
    heldout_accuracy: float
    heldout_correct: int
    n_train: int
    n_heldout: int
    seconds: float

    def __repr__(self) -> str:
        return (f"TrainResult(train={self.train_accuracy:.4f}, heldout={self.heldout_accuracy:.4f} "
                f"({self.heldout_correct}/{self.n_heldout}), n_train={self.n_train}, {self.seconds:.1f}s)")


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one intra-op torch thread (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def n_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Number of samples whose arg-max logit equals the label (one float32 forward pass)."""
    model.eval()
    return int((model(x).argmax(dim=1) == y).sum())


def train(dataset: Dataset, config: TrainConfig) -> TrainResult:
    """Train ``mlp(config.widths)`` on ``dataset`` under the protocol in the module docstring."""
    if config.widths[0] != dataset.n_features or config.widths[-1] != dataset.n_classes:
        raise OptionError(f"widths {config.widths}: must start with {dataset.n_features} and end with "
                          f"{dataset.n_classes} for dataset {dataset.name!r}")
    start = time.perf_counter()
    keep = stratified_subset(dataset.y_train, config.train_fraction, config.seed)
    x, y_clean = dataset.x_train[keep], dataset.y_train[keep]
    y = corrupt_labels(y_clean, config.label_noise, dataset.n_classes, config.seed)
    with single_thread():
        torch.manual_seed(config.seed)
        model = mlp(config.widths)
        shuffle = torch.Generator().manual_seed(config.seed)
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(config.epochs):
            model.train()
            for batch in torch.randperm(len(y), generator=shuffle).split(config.batch_size):
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x[batch]), y[batch]).backward()
                opt.step()
        correct_ho = n_correct(model, dataset.x_heldout, dataset.y_heldout)
        train_acc = n_correct(model, x, y) / len(y)
        train_clean = n_correct(model, x, y_clean) / len(y)
    return TrainResult(model, train_acc, train_clean, correct_ho / len(dataset.y_heldout), correct_ho,
                       len(y), len(dataset.y_heldout), time.perf_counter() - start)
