"""Loss-Hessian spectra checked against exact references.

References: the dense Hessian of a small MLP from ``torch.func.hessian`` of the flat loss built in this file (not
through hmu_diag's HVP code) and its ``numpy.linalg.eigvalsh``; central finite differences of the gradient;
``scipy.stats.norm`` smoothed ESDs; for a real pretrained model (MTCNN ONet from facenet-pytorch 2.6.0), the dense
Hessian of its face/no-face head block by ``torch.autograd.functional.hessian``.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from hmu_diag.errors import HmuDiagError, OptionError
from hmu_diag.spectra.hessian import (argmax_labels, as_batches, hessian_spectrum, hvp_operator, loss_function,
                                      select_parameters)

torch.set_num_threads(1)


def make_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).double()


@pytest.fixture(scope="module")
def problem():
    """MLP 6-12-3 (P = 123), 48 samples, its dense Hessian and exact eigenvalues (descending)."""
    model = make_mlp()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(48, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (48,), generator=g)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def flat_loss(th):
        params = dict(zip(names, (t.view(s) for t, s in zip(th.split([s.numel() for s in shapes]), shapes))))
        return F.cross_entropy(functional_call(model, params, (X,)), y)

    H = torch.func.hessian(flat_loss)(theta)
    lam = np.linalg.eigvalsh(H.numpy())[::-1]
    return model, X, y, H, lam


def test_hvp_matches_dense_hessian_and_finite_differences(problem):
    model, X, y, H, _ = problem
    op = hvp_operator(model, F.cross_entropy, (X, y), dtype="float64")
    assert op.n == 123 and op.mode == "func"
    v = torch.randn(op.n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    hv = op.matvec(v)
    torch.testing.assert_close(hv, H @ v, rtol=1e-12, atol=1e-14)
    eps = 1e-5
    fd = (op.gradient(op.theta + eps * v) - op.gradient(op.theta - eps * v)) / (2 * eps)
    assert torch.linalg.vector_norm(fd - hv) / torch.linalg.vector_norm(hv) < 1e-8   # O(eps^2) truncation


def test_autograd_path_equals_func_path(problem):
    model, X, y, H, _ = problem
    v = torch.randn(123, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a = hvp_operator(model, F.cross_entropy, (X, y), dtype="float64", hvp="autograd")
    torch.testing.assert_close(a.matvec(v), H @ v, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a.matvec(v), H @ v, rtol=1e-12, atol=1e-14)   # cached graph reused
    torch.testing.assert_close(a.gradient(a.theta), hvp_operator(model, F.cross_entropy, (X, y),
                                                                 dtype="float64").gradient(a.theta))


def test_top_k_density_trace_against_exact(problem):
    model, X, y, H, lam = problem
    spec = hessian_spectrum(model, F.cross_entropy, (X, y), top_k=10, n_probes=10, n_steps=90, trace_probes=100,
                            dtype="float64", seed=0)
    assert spec.converged.all()
    assert np.max(np.abs(spec.evals - lam[:10]) / np.abs(lam[:10])) < 1e-6
    # Hutchinson within its statistical error (4 standard errors; exact Rademacher sd from H)
    Hn = H.numpy()
    sd = np.sqrt(2 * ((Hn ** 2).sum() - (np.diag(Hn) ** 2).sum()) / 100)
    assert abs(spec.trace - lam.sum()) < 4 * sd
    assert 0.6 < spec.trace_stderr / sd < 1.4
    # SLQ density vs the exact Gaussian-smoothed ESD at the same kernel width, on the same grid
    exact = scipy.stats.norm.pdf(spec.grid[:, None], loc=lam[None, :], scale=spec.sigma).mean(axis=1)
    l1 = np.trapezoid(np.abs(spec.density - exact), spec.grid)
    # measured 0.096-0.097 for seeds 0-2 (10 probes x 90 steps; P = 123, so each probe's quadrature is noisy);
    # 100 probes give 0.031: the error is Monte-Carlo (~ 1/sqrt(n_probes)), 90 vs 123 steps change nothing
    assert l1 < 0.15
    assert abs(spec.negative_fraction - (lam < -spec.sigma).mean()) < 0.05     # measured 0.30-0.32 vs 0.30
    assert spec.lambda_min >= lam[-1] - 1e-10             # Ritz values are upper bounds on the smallest eigenvalue


def test_data_loader_weighting_equals_full_batch(problem):
    model, X, y, H, lam = problem
    v = torch.randn(123, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    chunks = [(X[:20], y[:20]), (X[20:40], y[20:40]), (X[40:], y[40:])]         # sizes 20, 20, 8
    for mode in ("func", "autograd"):
        op = hvp_operator(model, F.cross_entropy, chunks, dtype="float64", hvp=mode)
        torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-12, atol=1e-14)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=20)
    spec = hessian_spectrum(model, F.cross_entropy, loader, top_k=5, density=False, trace=False, dtype="float64")
    np.testing.assert_allclose(spec.evals, lam[:5], rtol=1e-8)
    # the unweighted mean of per-batch Hessians differs: the weighting matters here
    naive = sum(hvp_operator(model, F.cross_entropy, c, dtype="float64").matvec(v) for c in chunks) / 3
    assert torch.linalg.vector_norm(naive - H @ v) > 1e-3 * torch.linalg.vector_norm(H @ v)


def test_parameter_subset_is_the_dense_sub_block(problem):
    model, X, y, H, _ = problem
    names = select_parameters(model, r"^2\.")
    assert names == ["2.weight", "2.bias"]
    idx = np.arange(123 - 39, 123)                        # last layer: 12*3 + 3 parameters, flattened last
    sub = np.linalg.eigvalsh(H.numpy()[np.ix_(idx, idx)])[::-1]
    spec = hessian_spectrum(model, F.cross_entropy, (X, y), params=r"^2\.", top_k=8, density=False,
                            trace=False, dtype="float64")
    assert spec.n_params == 39
    np.testing.assert_allclose(spec.evals, sub[:8], rtol=1e-8)


def test_float32_default_close_to_float64(problem):
    model, X, y, _, lam = problem
    spec = hessian_spectrum(model.float(), F.cross_entropy, (X.float(), y), top_k=3, density=False, trace=False)
    model.double()
    assert spec.dtype == "float32" and spec.converged.all()
    np.testing.assert_allclose(spec.evals, lam[:3], rtol=1e-3)


def test_torchscript_model_through_autograd(problem, tmp_path):
    model, X, y, _, lam = problem
    path = tmp_path / "mlp.ts"
    torch.jit.save(torch.jit.trace(model, X), str(path))
    from hmu_diag.model_io import load_model
    scripted = load_model(str(path))
    assert isinstance(scripted, torch.jit.ScriptModule)
    spec = hessian_spectrum(scripted, F.cross_entropy, (X, y), top_k=5, density=False, trace=False,
                            dtype="float64")
    assert spec.hvp == "autograd" and spec.converged.all()
    np.testing.assert_allclose(spec.evals, lam[:5], rtol=1e-8)
    with pytest.raises(OptionError, match="TorchScript"):
        hvp_operator(scripted, F.cross_entropy, (X, y), hvp="func")


def test_frame_row_in_weights_format(problem):
    model, X, y, _, lam = problem
    spec = hessian_spectrum(model, F.cross_entropy, (X, y), top_k=12, n_probes=2, n_steps=30, trace_probes=10,
                            dtype="float64")
    df = spec.to_frame("mlp")
    assert len(df) == 1
    row = df.iloc[0]
    for col in ("model", "layer", "kind", "shape", "view", "source", "status", "N", "M", "num_evals", "lambda_max",
                "alpha", "D", "xmin", "trace", "n_negative", "lambda_min", "rank_exponent"):
        assert col in df.columns, col
    assert row.source == "hessian" and row.model == "mlp" and row.N == 123
    assert row.num_evals == (lam[:12] > 0).sum()           # only converged positive eigenvalues are fitted
    assert row.lambda_max == pytest.approx(lam[0], rel=1e-8)


def test_bad_input_is_one_line_error(problem):
    model, X, y, _, _ = problem
    with pytest.raises(OptionError, match="selects no parameter"):
        select_parameters(model, "nothing-matches")
    with pytest.raises(OptionError, match="no parameter 'fc.weight'"):
        select_parameters(model, ["fc.weight"])
    with pytest.raises(OptionError, match="data: expected"):
        as_batches(42)
    with pytest.raises(OptionError, match="loss='hinge'"):
        loss_function("hinge")
    with pytest.raises(OptionError, match="choose one with output"):
        loss_function("cross_entropy")((X, X), y)


# ----------------------------------------------------------------------------------------------------------------
# A real pretrained model nobody here wrote: MTCNN ONet (facenet-pytorch 2.6.0), rebuilt in models_zoo.
# Loss: NLL of its face/no-face softmax head (output 2) against its own argmax labels, on 48x48 crops of
# scikit-learn's two bundled photos (the model's "self-distillation" Hessian at its trained weights).

@pytest.fixture(scope="module")
def onet_problem():
    from models_zoo.mtcnn_onet import onet
    from hmu_diag.data import load_data

    model = onet()
    x = load_data("sklearn:sample_images", n=8, seed=0).inputs
    labels = argmax_labels(model, x, output=2)
    return model, x, labels


def test_onet_head_block_top_k_vs_dense(onet_problem):
    model, x, labels = onet_problem
    head = model.dense6_1
    xd = x.double()
    with torch.no_grad():
        trunk = copy.deepcopy(model).double()
        feats = trunk.prelu5(trunk.dense5(_onet_trunk(trunk, xd)))
    W0, b0 = head.weight.detach().double(), head.bias.detach().double()

    def block_loss(W, b):
        return F.nll_loss(torch.log(torch.softmax(feats @ W.T + b, dim=1)), labels)

    Hw = torch.autograd.functional.hessian(block_loss, (W0, b0))
    n = W0.numel() + b0.numel()
    H = torch.cat([torch.cat([Hw[0][0].reshape(W0.numel(), -1), Hw[0][1].reshape(W0.numel(), -1)], 1),
                   torch.cat([Hw[1][0].reshape(b0.numel(), -1), Hw[1][1].reshape(b0.numel(), -1)], 1)], 0)
    assert H.shape == (n, n) == (514, 514)
    lam = np.linalg.eigvalsh(H.numpy())[::-1]
    spec = hessian_spectrum(model, loss_function("nll", output=2), (x, labels), params=r"^dense6_1\.", top_k=6,
                            density=False, trace=False, dtype="float64")
    top = lam[:6]
    ok = spec.converged
    assert ok[:2].all()                        # the head has rank <= n_samples; tiny values may not converge
    np.testing.assert_allclose(spec.evals[ok], top[ok], rtol=1e-6, atol=1e-12 * top[0])


def _onet_trunk(m, x):
    for i in range(1, 5):
        x = getattr(m, f"prelu{i}")(getattr(m, f"conv{i}")(x))
        x = getattr(m, f"pool{i}")(x) if i < 4 else x
    return x.permute(0, 3, 2, 1).contiguous().flatten(1)


def test_onet_all_parameters_top_k_converged(onet_problem):
    model, x, labels = onet_problem
    loss = loss_function("nll", output=2)
    spec = hessian_spectrum(model, loss, (x, labels), top_k=3, density=False, trace=False, dtype="float64")
    assert spec.n_params == 389_040
    assert spec.converged.all()
    assert (spec.residuals <= spec.tol * np.abs(spec.evals)).all()
    assert np.all(np.diff(spec.evals) <= 0) and spec.evals[0] > 0


@pytest.mark.slow
def test_onet_cross_checks_arpack_and_torchscript(onet_problem):
    model, x, labels = onet_problem
    loss = loss_function("nll", output=2)
    spec = hessian_spectrum(model, loss, (x, labels), top_k=3, density=False, trace=False, dtype="float64")
    # the same top eigenvalue from ARPACK (an independent Lanczos implementation) on the same HVP
    arp = hessian_spectrum(model, loss, (x, labels), top_k=1, density=False, trace=False, dtype="float64",
                           method="arpack")
    assert arp.evals[0] == pytest.approx(spec.evals[0], rel=1e-7)
    # and from a TorchScript trace of ONet through double backward (dense6_2/6_3 are unused by this loss)
    traced = torch.jit.trace(model, x[:1], check_trace=False)
    ts = hessian_spectrum(traced, loss, (x, labels), top_k=3, density=False, trace=False, dtype="float64")
    assert ts.hvp == "autograd" and ts.converged.all()
    np.testing.assert_allclose(ts.evals, spec.evals, rtol=1e-7)


def test_cli_hessian_writes_csvs(tmp_path, capsys):
    from hmu_diag.cli import hessian as cli

    sub = argparse.ArgumentParser(prog="hmu-diag").add_subparsers()
    parser = cli.add_parser(sub)
    args = parser.parse_args(["--model", "models_zoo.mtcnn_onet:onet", "--data", "sklearn:sample_images",
                              "--n-samples", "4", "--output", "2", "--loss", "nll", "--labels", "argmax",
                              "--params", "dense6", "--top-k", "5", "--n-probes", "2", "--n-steps", "20",
                              "--trace-probes", "10", "--dtype", "float64", "-o", str(tmp_path)])
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "top eigenvalues" in out
    import pandas as pd
    row = pd.read_csv(tmp_path / "hessian.csv").iloc[0]
    assert row.source == "hessian" and row.N == 256 * 16 + 16
    eig = pd.read_csv(tmp_path / "hessian_eigenvalues.csv")
    assert len(eig) == 5 and eig.eigenvalue.is_monotonic_decreasing
    assert (tmp_path / "hessian_density.csv").exists()
    with pytest.raises(HmuDiagError, match="no targets"):
        cli.run(parser.parse_args(["--model", "models_zoo.mtcnn_onet:onet", "--data", "sklearn:sample_images",
                                   "--n-samples", "2", "-o", str(tmp_path)]))
