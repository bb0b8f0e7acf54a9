"""Directory discovery: every checkpoint is one model, a sharded set (with or without index) is one model."""
from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from hmu_diag.errors import CheckpointError
from hmu_diag.load import ShardedCheckpoint, iter_tensors, list_models


def sd(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"layers.{i}.weight": torch.randn(16, 16, generator=g) for i in range(4)}


def write_shards(folder, weights, stem, n, index):
    names = list(weights)
    weight_map = {}
    for i in range(n):
        fname = f"{stem}-{i + 1:05d}-of-{n:05d}.safetensors"
        safetensors.torch.save_file({k: weights[k] for k in names[i::n]}, str(folder / fname))
        weight_map.update({k: fname for k in names[i::n]})
    if index:
        (folder / f"{stem}.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_directory_lists_each_checkpoint_once(tmp_path):
    torch.save(sd(1), tmp_path / "a.pt")
    torch.save({"state_dict": sd(2)}, tmp_path / "b.ckpt")
    safetensors.torch.save_file(sd(3), str(tmp_path / "c.safetensors"))
    (tmp_path / "runs" / "epoch10").mkdir(parents=True)
    torch.save(sd(4), tmp_path / "runs" / "epoch10" / "w.pth")
    torch.save(sd(5), tmp_path / "runs" / "epoch2.pth")
    (tmp_path / "sharded").mkdir()
    write_shards(tmp_path / "sharded", sd(6), "model", 2, index=True)
    write_shards(tmp_path, sd(7), "noindex", 3, index=False)
    (tmp_path / "README.md").write_text("not a checkpoint")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / ".git").mkdir()
    torch.save(sd(8), tmp_path / ".git" / "hidden.pt")

    models = list_models(tmp_path)
    names = [m.name for m in models]
    assert names == ["a.pt", "b.ckpt", "c.safetensors", "noindex.safetensors", "runs/epoch2.pth",
                     "runs/epoch10/w.pth", "sharded/model.safetensors"]
    seeds = dict(zip(names, (1, 2, 3, 7, 5, 4, 6)))
    for model in models:
        got = {r.name: r.tensor for r in iter_tensors(model)}
        want = sd(seeds[model.name])
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), model.name
    assert isinstance(models[3].source, ShardedCheckpoint) and len(models[3].source.files) == 3
    assert isinstance(models[6].source, ShardedCheckpoint) and models[6].source.index is not None


def test_directory_with_one_model_iterates_directly(tmp_path):
    write_shards(tmp_path, sd(1), "model", 2, index=False)
    assert {r.name for r in iter_tensors(tmp_path)} == set(sd(1))


def test_directory_with_several_models_asks_for_list_models(tmp_path):
    torch.save(sd(1), tmp_path / "a.pt")
    torch.save(sd(2), tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"holds 2 models \(a\.pt, b\.pt\); use list_models"):
        iter_tensors(tmp_path)


def test_sharded_bin_with_index(tmp_path):
    weights = sd(9)
    names = list(weights)
    weight_map = {}
    for i in range(2):
        fname = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: weights[k] for k in names[i::2]}, tmp_path / fname)
        weight_map.update({k: fname for k in names[i::2]})
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    models = list_models(tmp_path)
    assert [m.name for m in models] == ["pytorch_model.bin"]
    got = {r.name: r.tensor for r in iter_tensors(models[0])}
    assert set(got) == set(weights) and all(torch.equal(got[k], weights[k]) for k in weights)


def test_bad_index(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: not a shard index"):
        list_models(tmp_path)


def test_hugging_face_folder_with_both_formats_is_one_model(tmp_path):
    """``model.safetensors`` (here sharded with an index) beside ``pytorch_model.bin``: the same weights saved twice.
    The safetensors copy is read; the .bin gets a row saying why it was not; a lone .bin elsewhere is read."""
    from hmu_diag import analyze
    from hmu_diag.load.records import DuplicateCheckpoint

    hf = tmp_path / "hf"
    hf.mkdir()
    write_shards(hf, sd(0), "model", 2, index=True)
    torch.save(sd(0), hf / "pytorch_model.bin")
    (tmp_path / "old").mkdir()
    torch.save(sd(1), tmp_path / "old" / "pytorch_model.bin")
    refs = {r.name: r for r in list_models(tmp_path)}
    assert sorted(refs) == ["hf/model.safetensors", "hf/pytorch_model.bin", "old/pytorch_model.bin"]
    assert isinstance(refs["hf/pytorch_model.bin"].source, DuplicateCheckpoint)
    assert not isinstance(refs["old/pytorch_model.bin"].source, DuplicateCheckpoint)
    assert [r.name for r in iter_tensors(hf)] == list(sd(0))          # the folder alone is one model
    df = analyze(tmp_path, htmp=False)
    dup = df[df["model"].eq("hf/pytorch_model.bin")]
    assert list(dup["status"]) == ["skipped: not read as a model: hf/pytorch_model.bin: the same weights as "
                                   "hf/model.safetensors (Hugging Face saves both; like transformers, hmu-diag reads "
                                   "the safetensors copy)"]
    assert df[df["model"].eq("hf/model.safetensors")]["status"].eq("ok").sum() == 4
    assert df[df["model"].eq("old/pytorch_model.bin")]["status"].eq("ok").sum() == 4
