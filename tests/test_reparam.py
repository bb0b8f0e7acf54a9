"""Weight-norm and spectral-norm layers are analysed as the weight the layer computes with (hmu_diag.load.reparam).

Reference: the effective weight torch itself uses in eval mode - the parametrisation's ``module.weight``, or for the
hook-based ``torch.nn.utils.weight_norm`` / ``spectral_norm`` the ``weight`` attribute their pre-forward hook sets -
and its exact SVD.
"""
from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn
from torch.nn.utils import parametrizations

from hmu_diag import analyze
from hmu_diag.load.records import TensorRecord
from hmu_diag.load.reparam import effective_weights


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(64, 128)),
                          parametrizations.spectral_norm(nn.Linear(128, 96)),
                          torch.nn.utils.weight_norm(nn.Linear(96, 50)),
                          torch.nn.utils.spectral_norm(nn.Conv1d(50, 40, 3)),
                          parametrizations.weight_norm(nn.Conv1d(40, 30, 5), dim=None),
                          torch.nn.utils.weight_norm(nn.Linear(30, 20), dim=1))
    model.eval()
    for layer, x in zip(model, (torch.randn(1, 64), torch.randn(1, 128), torch.randn(1, 96), torch.randn(1, 50, 9),
                                torch.randn(1, 40, 9), torch.randn(1, 30))):
        layer(x)                                   # the hook-based ones set .weight in their pre-forward hook
    return model


def _torch_spectrum(layer: nn.Module) -> np.ndarray:
    w = layer.weight.detach().double()
    return np.sort(np.linalg.svd(w.reshape(w.shape[0], -1).numpy(), compute_uv=False) ** 2)


def test_effective_weights_of_every_reparametrisation_match_torch():
    model = _model()
    df = analyze(model, htmp=False).set_index("layer")
    for i, layer in enumerate(model):
        ref = _torch_spectrum(layer)
        assert df.loc[str(i), "status"] == "ok" and df.loc[str(i), "param"] == f"{i}.weight"
        assert df.loc[str(i), "lambda_max"] == pytest.approx(ref[-1], rel=1e-5), i
        assert df.loc[str(i), "num_evals"] == ref.size
    parts = df[df["status"].str.contains("analysed as the effective weight")]
    assert len(parts) == 2 + 3 + 2 + 3 + 2 + 2                      # every stored part has its row
    assert df.loc["3", "kind"] == "conv1d" and df.loc["0", "kind"] == "linear"


def test_state_dict_in_name_order_gives_the_same_rows(tmp_path):
    """A name-sorted file puts spectral norm's ``0._u``/``0._v`` before ``original``: parts may come in any order.
    The file's weights are rebuilt from the stored parts, the module's are torch's own computed ones: both float32,
    so they agree to float32 rounding."""
    model = _model()
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(tmp_path / "m.safetensors"))
    from_module = analyze(model, htmp=False).set_index("layer")
    from_file = analyze(tmp_path / "m.safetensors", htmp=False).set_index("layer")
    for i in range(len(model)):
        assert from_file.loc[str(i), "alpha"] == pytest.approx(from_module.loc[str(i), "alpha"], rel=1e-6)
        assert from_file.loc[str(i), "lambda_max"] == pytest.approx(from_module.loc[str(i), "lambda_max"], rel=1e-6)


def test_an_incomplete_set_is_passed_on_unchanged():
    v = torch.randn(30, 20)
    records = [TensorRecord("fc.weight_v", v, None), TensorRecord("other.weight", torch.randn(5, 5), None)]
    out = list(effective_weights(records))
    assert [r.name for r in out] == ["other.weight", "fc.weight_v"] and out[1].tensor is v
    assert all(r.skip_reason is None for r in out)


def test_a_module_gives_any_parametrisation_as_torch_computes_it():
    """In memory, every ``torch.nn.utils.parametrize`` tensor (here: orthogonal, which no state dict can rebuild) is
    torch's own value in eval mode, and asking for it leaves the module's training flag and spectral-norm vectors
    as they were."""
    torch.manual_seed(1)
    model = nn.Sequential(parametrizations.orthogonal(nn.Linear(24, 24)), parametrizations.spectral_norm(nn.Linear(24, 30)))
    model.train()
    u_before = model[1].parametrizations.weight[0]._u.clone()
    df = analyze(model, htmp=False).set_index("layer")
    assert df.loc["0.parametrizations.weight.original", "status"] == (
        "skipped: part of 0.weight (parametrised: Orthogonal); analysed as the effective weight")
    assert df.loc["0", "lambda_max"] == pytest.approx(1.0, rel=1e-5)           # an orthogonal matrix
    assert model.training and torch.equal(model[1].parametrizations.weight[0]._u, u_before)
    model.eval()
    assert df.loc["1", "lambda_max"] == pytest.approx(_torch_spectrum(model[1])[-1], rel=1e-6)


def test_a_state_dict_of_an_unknown_parametrisation_is_not_analysed_as_its_parts():
    """An orthogonal parametrisation's state dict holds ``original`` and ``0.base``, from which the orthogonal weight
    cannot be rebuilt without the module: both are skip rows, never analysed as if they were the weight."""
    model = parametrizations.orthogonal(nn.Linear(24, 24))
    rows = analyze(dict(model.state_dict()), htmp=False).set_index("layer")
    for part in ("parametrizations.weight.original", "parametrizations.weight.0.base"):
        assert rows.loc[part, "status"].startswith("skipped: stored part of a parametrised weight that a state dict "
                                                   "cannot rebuild")
    assert not rows["status"].eq("ok").any()
