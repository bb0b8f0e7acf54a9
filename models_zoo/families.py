"""The zoo's model families: series of models that differ in one training knob, for ranking studies.

Following Martin, Peng & Mahoney (Nat. Commun. 12:4122, 2021), spectral metrics are compared with accuracy
*within* a series. Two kinds of series are defined:

* temperature series (``batch_size``, ``learning_rate``): same architecture and epochs; only the SGD noise
  scale lr/batch_size changes (Martin & Mahoney, JMLR 2021, Sec. 7 use batch size as a temperature knob).
  Train accuracy and held-out accuracy move together here, so these are the *easy* series.
* interpolation series (``label_noise``, ``train_size``, ``width``, ``weight_decay``, ``seed``): every
  model is trained for the same number of epochs to 100 % accuracy on its (possibly noisy) training
  labels, so neither train accuracy nor training time gives the held-out ranking away. ``seed`` is the
  noise floor: the same config under five seeds.

Digits families are small enough to commit (``models_zoo/digits/<family>``); the MNIST-5k family is
regenerated into the ignored ``.cache/zoo/<family>`` by ``python -m models_zoo.build``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from hmu_diag.errors import OptionError

from .train import TrainConfig

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Member:
    """One model of a family: its file stem and its training config."""

    name: str
    config: TrainConfig


@dataclass(frozen=True)
class Family:
    """A series of models on one dataset; ``varied`` names the config fields that change along it."""

    name: str
    dataset: str
    description: str
    varied: tuple[str, ...]
    members: tuple[Member, ...]
    root: str  # parent folder relative to the repository root; the family lives in root/name
    committed: bool

    @property
    def default_dir(self) -> Path:
        return REPO / self.root / self.name

    def __repr__(self) -> str:
        return f"Family({self.name!r}, {self.dataset}, {len(self.members)} models, varied={self.varied})"


def _sweep(base: TrainConfig, field: str, values, label) -> tuple[Member, ...]:
    return tuple(Member(label(v), replace(base, **{field: v})) for v in values)


# --- temperature series (plain SGD, constant lr, no weight decay) -------------------------------------------
_BS_BASE = TrainConfig(widths=(64, 512, 256, 10), batch_size=32, lr=2 / 32, epochs=150)
_LR_BASE = TrainConfig(widths=(64, 256, 128, 10), batch_size=32, lr=0.05, epochs=150)
_MNIST_BS_BASE = TrainConfig(widths=(784, 256, 128, 10), batch_size=32, lr=0.1, epochs=60)
BATCH_SIZES = (8, 16, 32, 64, 128, 256)
LEARNING_RATES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)

# --- interpolation series (SGD + momentum 0.9, 200 epochs: 100 % train accuracy even at 40 % label noise) ----
_INTERP_BASE = TrainConfig(widths=(64, 128, 128, 10), batch_size=32, lr=0.05, epochs=200, momentum=0.9)

_FAMILIES = (
    Family(
        "demo", "digits",
        "The default demo checkpoint: a well-trained 64-256-256-10 ReLU MLP on sklearn digits.",
        (),
        (Member("digits_mlp", TrainConfig(widths=(64, 256, 256, 10), batch_size=32, lr=0.05, epochs=100,
                                          momentum=0.9, weight_decay=5e-4)),),
        "models_zoo", True),
    Family(
        "batch_size", "digits",
        "Batch-size sweep with lr = 2/batch_size, the convention of the HTMP authors' training code (Hodgkinson, "
        "Mahoney & Wang 2025): 64-512-256-10 MLP, plain SGD, 150 epochs. The SGD temperature lr/batch_size = "
        "2/batch_size^2 spans three decades; smaller batches should give heavier-tailed layer spectra.",
        ("batch_size", "lr"), tuple(Member(f"bs{b:03d}", replace(_BS_BASE, batch_size=b, lr=2 / b))
                                    for b in BATCH_SIZES),
        "models_zoo/digits", True),
    Family(
        "learning_rate", "digits",
        "Learning-rate sweep at batch size 32 (temperature ~ lr/batch_size): 64-256-128-10 MLP, plain SGD, "
        "150 epochs.",
        ("lr",), _sweep(_LR_BASE, "lr", LEARNING_RATES, lambda v: f"lr{v:g}".replace(".", "p")),
        "models_zoo/digits", True),
    Family(
        "label_noise", "digits",
        "Fraction of training labels replaced by a wrong class; every model interpolates its noisy labels.",
        ("label_noise",), _sweep(_INTERP_BASE, "label_noise", (0.0, 0.1, 0.2, 0.4), lambda v: f"noise{round(v * 100):02d}"),
        "models_zoo/digits", True),
    Family(
        "train_size", "digits",
        "Stratified fraction of the training split used for training; every model interpolates.",
        ("train_fraction",), _sweep(_INTERP_BASE, "train_fraction", (0.25, 0.5, 0.75, 1.0),
                                    lambda v: f"frac{round(v * 100):03d}"),
        "models_zoo/digits", True),
    Family(
        "width", "digits",
        "Hidden width w of a 64-w-w-10 MLP; every model interpolates.",
        ("widths",), tuple(Member(f"w{w:03d}", replace(_INTERP_BASE, widths=(64, w, w, 10)))
                           for w in (64, 96, 128, 192, 256)),
        "models_zoo/digits", True),
    Family(
        "weight_decay", "digits",
        "L2 weight decay (torch.optim.SGD weight_decay); every model interpolates.",
        ("weight_decay",), _sweep(_INTERP_BASE, "weight_decay", (0.0, 1e-4, 3e-4, 1e-3, 2e-3),
                                  lambda v: f"wd{v:.0e}".replace("+", "").replace("-", "m") if v else "wd0"),
        "models_zoo/digits", True),
    Family(
        "seed", "digits",
        "The same config under five seeds (initialisation and shuffling): the noise floor of any ranking.",
        ("seed",), _sweep(_INTERP_BASE, "seed", (0, 1, 2, 3, 4), lambda s: f"seed{s}"),
        "models_zoo/digits", True),
    Family(
        "mnist5k_batch_size", "mnist5k",
        "Batch-size sweep on the real MNIST 5k subset at a fixed learning rate: 784-256-128-10 MLP, plain SGD "
        "lr=0.1, 60 epochs. Regenerated into .cache/zoo (not committed).",
        ("batch_size",), _sweep(_MNIST_BS_BASE, "batch_size", BATCH_SIZES, lambda b: f"bs{b:03d}"),
        ".cache/zoo", False),
)

FAMILIES: dict[str, Family] = {f.name: f for f in _FAMILIES}


def get_family(name: str) -> Family:
    """The family called ``name``."""
    if name not in FAMILIES:
        raise OptionError(f"zoo family {name!r}: unknown (choose from {', '.join(FAMILIES)})")
    return FAMILIES[name]
