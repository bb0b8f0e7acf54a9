"""Loaders: every source format gives the same named tensors, streamed, with optimizer state left out.

References: the tensors of ``model.state_dict()`` (exact equality), torch.save/torch.jit.save/safetensors
writers, and ``safe_open``'s own call counts for laziness.
"""
from __future__ import annotations

import json
import warnings

import pytest
import safetensors
import safetensors.torch
import torch
from torch import nn

import hmu_diag.load.safetensors_io as st_io
from hmu_diag.errors import CheckpointError
from hmu_diag.load import ModelRef, ShardedCheckpoint, TensorRecord, iter_tensors, list_models
from hmu_diag.walk import walk

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


class TinyNet(nn.Module):
    """One of every layer type the walker has a rule for (scriptable, so it also exists as TorchScript)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 12)
        self.fc = nn.Linear(12, 24)
        self.conv1 = nn.Conv1d(4, 16, 3)
        self.conv2 = nn.Conv2d(3, 16, 3)
        self.conv3 = nn.Conv3d(2, 12, 3)
        self.attn = nn.MultiheadAttention(12, 2)
        self.lstm = nn.LSTM(12, 16, num_layers=2, bidirectional=True)
        self.gru = nn.GRU(12, 16)
        self.rnn = nn.RNN(12, 16)
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def tiny_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().eval()


def as_dict(records) -> dict[str, torch.Tensor]:
    out = {}
    for rec in records:
        assert isinstance(rec, TensorRecord)
        assert rec.name not in out, f"duplicate name {rec.name}"
        assert rec.tensor.device.type == "cpu"
        out[rec.name] = rec.tensor
    return out


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name


def save_all_formats(net: nn.Module, folder) -> dict[str, object]:
    """The same network as module, state dict, .pt (zip), legacy .pt, safetensors and TorchScript."""
    sd = net.state_dict()
    torch.save(sd, folder / "net.pt")
    torch.save(sd, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "net.safetensors"))
    torch.jit.save(torch.jit.script(net), str(folder / "net.jit"))
    return {"module": net, "state_dict": sd, "pt": folder / "net.pt", "legacy": folder / "legacy.pth",
            "safetensors": folder / "net.safetensors", "torchscript": folder / "net.jit"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """TinyNet saved once in every format (module-scoped: scripting is the slow part)."""
    net = tiny_net()
    return net, save_all_formats(net, tmp_path_factory.mktemp("formats"))


# --- nn.Module and state dicts ------------------------------------------------------------------------------

def test_module_records_types_and_buffers():
    net = tiny_net()
    records = list(iter_tensors(net))
    assert_same_tensors(as_dict(records), net.state_dict())
    by_name = {r.name: r for r in records}
    assert by_name["fc.weight"].module_type == "Linear"
    assert by_name["conv2.weight"].module_type == "Conv2d"
    assert by_name["attn.in_proj_weight"].module_type == "MultiheadAttention"
    assert by_name["lstm.weight_hh_l1_reverse"].module_type == "LSTM"
    assert by_name["embed.weight"].module_type == "Embedding"
    assert by_name["bn.running_mean"].is_buffer and by_name["bn.num_batches_tracked"].is_buffer
    assert not by_name["bn.weight"].is_buffer and not by_name["fc.weight"].is_buffer


def test_dynamically_quantised_module_is_walked_not_crashed():
    """quantize_dynamic's state dict holds non-tensors (a dtype, a packed (weight, bias) tuple): the tuple is
    flattened, the dtype is no data, and the int8 weight is analysed dequantised."""
    from hmu_diag import analyze

    float_net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    net = torch.ao.quantization.quantize_dynamic(float_net, {nn.Linear}, dtype=torch.qint8)
    rows = analyze(net, htmp=False).set_index("layer")
    weight = rows.loc["0._packed_params._packed_params.0"]
    assert weight["status"] == "ok" and weight["shape"] == "128x64" and weight["view"].startswith("dequantised qint8")
    assert weight["num_evals"] == 64


def test_state_dict_has_no_module_types():
    records = list(iter_tensors(tiny_net().state_dict()))
    assert all(r.module_type is None and not r.is_buffer for r in records)


def test_nested_plain_dict_is_flattened_with_dots():
    a, b = torch.randn(20, 12), torch.randn(12, 30)
    got = as_dict(iter_tensors({"encoder": {"fc": {"weight": a}}, "decoder": {"out.weight": b}, "epoch": 3}))
    assert set(got) == {"encoder.fc.weight", "decoder.out.weight"}
    assert torch.equal(got["encoder.fc.weight"], a) and torch.equal(got["decoder.out.weight"], b)


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model_state", "model", "module"])
def test_weights_found_under_container_key(tmp_path, key):
    net = tiny_net()
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(3, 12)).sum().backward()
    optimizer.step()
    ckpt = {"epoch": 7, key: net.state_dict(), "optimizer": optimizer.state_dict()}
    torch.save(ckpt, tmp_path / "ckpt.pt")
    assert_same_tensors(as_dict(iter_tensors(tmp_path / "ckpt.pt")), net.state_dict())


def test_optimizer_state_never_read_as_layers(tmp_path):
    """resemblyzer-style {step, model_state, optimizer_state}, and optimizer state next to bare weights."""
    net = tiny_net()
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(3, 12)).sum().backward()
    optimizer.step()
    opt_state = optimizer.state_dict()
    assert any("exp_avg" in s for s in opt_state["state"].values())  # the moments really are there
    for ckpt in ({"step": 1, "model_state": net.state_dict(), "optimizer_state": opt_state},
                 {**net.state_dict(), "optimizer_states": [opt_state]},
                 {"weights": net.state_dict(), "opt": opt_state}):
        torch.save(ckpt, tmp_path / "c.pt")
        names = set(as_dict(iter_tensors(tmp_path / "c.pt")))
        assert not any("exp_avg" in n or "state." in n or "optimizer" in n for n in names), names
        assert {n.removeprefix("weights.") for n in names} == set(net.state_dict())


def test_lightning_checkpoint_model_prefix_stripped(tmp_path):
    net = tiny_net()
    ckpt = {"epoch": 2, "global_step": 10, "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
            "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": []}],
            "lr_schedulers": [], "callbacks": {}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    assert_same_tensors(as_dict(iter_tensors(tmp_path / "last.ckpt")), net.state_dict())


def test_wrapper_prefixes_stripped():
    net = tiny_net()
    wrapped = {f"module._orig_mod.{k}": v for k, v in net.state_dict().items()}
    assert_same_tensors(as_dict(iter_tensors(wrapped)), net.state_dict())
    compiled_like = nn.Module()
    compiled_like.add_module("_orig_mod", net)
    assert_same_tensors(as_dict(iter_tensors(compiled_like)), net.state_dict())


# --- torch.save files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["pt", "legacy"])
def test_torch_save_files(saved, fmt):
    net, paths = saved
    assert_same_tensors(as_dict(iter_tensors(paths[fmt])), net.state_dict())


def test_zip_checkpoint_is_memory_mapped(tmp_path, monkeypatch):
    net = tiny_net()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    list(iter_tensors(tmp_path / "net.pt"))
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]


def test_cuda_saved_tensors_load_on_cpu(tmp_path, monkeypatch):
    """map_location="cpu" is passed (the EasyOCR/resemblyzer files were saved from CUDA)."""
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    torch.save({"w": torch.randn(12, 12)}, tmp_path / "w.pt", _use_new_zipfile_serialization=False)
    list(iter_tensors(tmp_path / "w.pt"))
    assert calls[0]["map_location"] == "cpu" and calls[0]["mmap"] is False


def test_trusted_full_model_pickle_gives_module_types(tmp_path):
    net = tiny_net()
    torch.save(net, tmp_path / "full.pt")
    with pytest.warns(UserWarning, match="trust_pickle"):
        records = list(iter_tensors(tmp_path / "full.pt", trust_pickle=True))
    assert {r.name: r.module_type for r in records}["conv3.weight"] == "Conv3d"
    assert_same_tensors(as_dict(records), net.state_dict())


def test_safe_file_with_trust_pickle_does_not_warn(tmp_path):
    torch.save({"w": torch.randn(12, 12)}, tmp_path / "w.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(as_dict(iter_tensors(tmp_path / "w.pt", trust_pickle=True))) == ["w"]


def test_no_tensors_is_an_error(tmp_path):
    torch.save({"epoch": 3, "note": "hello"}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match=r"meta\.pt: no tensors found"):
        list(iter_tensors(tmp_path / "meta.pt"))


# --- safetensors --------------------------------------------------------------------------------------------

def shard(sd: dict[str, torch.Tensor], folder, n: int, *, index: bool, stem: str = "model") -> list:
    names = list(sd)
    files = []
    weight_map = {}
    for i in range(n):
        fname = f"{stem}-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: sd[k].contiguous() for k in names[i::n]}
        safetensors.torch.save_file(part, str(folder / fname))
        weight_map.update({k: fname for k in part})
        files.append(folder / fname)
    if index:
        (folder / f"{stem}.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return files


def test_safetensors_single(saved):
    net, paths = saved
    assert_same_tensors(as_dict(iter_tensors(paths["safetensors"])), net.state_dict())


@pytest.mark.parametrize("index", [True, False])
def test_safetensors_sharded_is_one_model(tmp_path, index):
    net = tiny_net()
    shard(net.state_dict(), tmp_path, 3, index=index)
    models = list_models(tmp_path)
    assert len(models) == 1 and isinstance(models[0].source, ShardedCheckpoint)
    assert len(models[0].source.files) == 3
    assert_same_tensors(as_dict(iter_tensors(models[0])), net.state_dict())
    assert_same_tensors(as_dict(iter_tensors(tmp_path)), net.state_dict())
    if index:
        src = tmp_path / "model.safetensors.index.json"
        assert_same_tensors(as_dict(iter_tensors(src)), net.state_dict())


def test_safetensors_order_is_natural_and_shard_independent(tmp_path):
    sd = {f"h.{i}.w": torch.full((2, 2), float(i)) for i in (0, 1, 2, 10, 11)}
    safetensors.torch.save_file(sd, str(tmp_path / "one.safetensors"))
    (tmp_path / "sharded").mkdir()
    shard(sd, tmp_path / "sharded", 2, index=False)
    want = ["h.0.w", "h.1.w", "h.2.w", "h.10.w", "h.11.w"]
    assert [r.name for r in iter_tensors(tmp_path / "one.safetensors")] == want
    assert [r.name for r in iter_tensors(tmp_path / "sharded")] == want


def test_low_precision_safetensors(tmp_path):
    """bf16 and fp16 weights are analysed (upcast to the ESD dtype); fp8 weights, whose scales live in other tensors,
    are skip rows with the reason - in one run, no exception."""
    from hmu_diag import analyze

    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 96, generator=g)
    sd = {"a.weight": w.to(torch.bfloat16), "b.weight": w.half(), "c.weight": w.to(torch.float8_e4m3fn),
          "c.weight_scale_inv": torch.ones(1, 1)}
    safetensors.torch.save_file(sd, str(tmp_path / "lowp.safetensors"))
    rows = analyze(tmp_path / "lowp.safetensors", htmp=False).set_index("param")
    exact = analyze({"a.weight": w.to(torch.bfloat16).double()}, htmp=False)
    assert rows.loc["a.weight", "status"] == rows.loc["b.weight", "status"] == "ok"
    assert rows.loc["a.weight", "alpha"] == pytest.approx(exact["alpha"].iloc[0], rel=1e-12)
    assert rows.loc["c.weight", "status"].startswith("skipped: quantised float dtype (torch.float8_e4m3fn)")


def test_safetensors_missing_shard(tmp_path):
    files = shard(tiny_net().state_dict(), tmp_path, 3, index=False)
    files[1].unlink()
    with pytest.raises(CheckpointError, match=r"missing shard\(s\) \[2\]"):
        list_models(tmp_path)
    shard(tiny_net().state_dict(), tmp_path, 3, index=True, stem="other")
    (tmp_path / "other-00003-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"other\.safetensors\.index\.json: missing shard file"):
        list(iter_tensors(tmp_path / "other.safetensors.index.json"))


class CountingHandle:
    """Wraps a safe_open handle and counts get_tensor calls."""

    def __init__(self, handle, counter):
        self._handle, self._counter = handle, counter

    def __enter__(self):
        self._handle.__enter__()
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)

    def keys(self):
        return self._handle.keys()

    def get_tensor(self, name):
        self._counter.append(name)
        return self._handle.get_tensor(name)


@pytest.mark.parametrize("sharded", [False, True])
def test_safetensors_read_lazily(tmp_path, monkeypatch, saved, sharded):
    """One get_tensor per record consumed, never a full load (load_file is made to fail)."""
    net, paths = saved
    if sharded:
        shard(net.state_dict(), tmp_path, 2, index=True)
        source = tmp_path / "model.safetensors.index.json"
    else:
        source = paths["safetensors"]
    fetched: list[str] = []
    real = st_io.safe_open
    monkeypatch.setattr(st_io, "safe_open", lambda *a, **k: CountingHandle(real(*a, **k), fetched))
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("full load"))
    stream = iter_tensors(source)
    assert fetched == []
    first = next(stream)
    assert fetched == [first.name]
    second = next(stream)
    assert fetched == [first.name, second.name]
    rest = list(stream)
    assert len(fetched) == 2 + len(rest) == len(net.state_dict())


# --- TorchScript ----------------------------------------------------------------------------------------

def test_torchscript_types_from_original_name(saved):
    net, paths = saved
    path = paths["torchscript"]
    records = list(iter_tensors(path))
    assert_same_tensors(as_dict(records), net.state_dict())
    types = {r.name: r.module_type for r in records}
    assert types["lstm.weight_ih_l0"] == "LSTM" and types["gru.weight_hh_l0"] == "GRU"
    assert types["conv1.weight"] == "Conv1d" and types["attn.in_proj_weight"] == "MultiheadAttention"
    assert {r.name for r in records if r.is_buffer} == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}


def test_format_detected_from_bytes_not_extension(tmp_path, saved):
    net, paths = saved
    renamed = {fmt: tmp_path / f"{fmt}.bin" for fmt in ("pt", "safetensors", "torchscript")}
    for fmt, target in renamed.items():
        target.write_bytes(paths[fmt].read_bytes())
        assert_same_tensors(as_dict(iter_tensors(target)), net.state_dict())
    assert any(r.module_type == "LSTM" for r in iter_tensors(renamed["torchscript"]))


# --- stable names across every source -------------------------------------------------------------------

def test_same_layers_from_every_source(saved):
    """module, state dict, .pt, legacy .pth, safetensors and TorchScript give the same LayerMatrix rows."""
    net, sources = saved
    rows = {}
    for label, source in sources.items():
        layers = list(walk(iter_tensors(source)))
        rows[label] = {m.layer: (m.kind, m.part, m.view, m.param) for m in layers if m.skip_reason is None}
        rows[label + "/all"] = sorted(m.layer for m in layers)
    reference = rows["module"]
    assert {"fc", "conv1", "conv2", "conv3", "embed", "attn.in_proj:q", "lstm.weight_hh_l1_reverse:o",
            "gru.weight_ih_l0:n", "rnn.weight_hh_l0"} <= set(reference)
    for label in sources:
        assert rows[label] == reference, label
        assert rows[label + "/all"] == rows["module/all"], label


# --- list_models on single sources ------------------------------------------------------------------------

def test_list_models_single_sources(saved):
    net, paths = saved
    assert list_models(paths["pt"]) == [ModelRef("net.pt", paths["pt"])]
    assert list_models(net)[0].name == "TinyNet" and list_models(net)[0].source is net
    sd = net.state_dict()
    assert list_models(sd) == [ModelRef("OrderedDict", sd)]
    with pytest.raises(CheckpointError, match="int object: not a model source"):
        list_models(3)
    with pytest.raises(CheckpointError, match="int object: not a model source"):
        iter_tensors(3)
