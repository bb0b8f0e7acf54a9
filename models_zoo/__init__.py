"""Reference model zoo for hmu-diag: small MLPs trained on real data shipped inside wheels.

``models_zoo.data`` loads sklearn digits and the MNIST-5k subset with fixed splits, ``models_zoo.train``
trains one config deterministically, ``models_zoo.families`` defines the series, ``models_zoo.build`` (CLI)
writes checkpoints and manifests, ``models_zoo.manifest`` reads them back. See models_zoo/README.md.
"""
from .families import FAMILIES, Family, Member, get_family
from .manifest import load_model, read_manifest
from .train import TrainConfig, TrainResult

__all__ = ["FAMILIES", "Family", "Member", "TrainConfig", "TrainResult", "get_family", "load_model",
           "read_manifest"]
