"""Property tests (hypothesis) of the contracts in .ci/CONTRACTS.md.

fit_power_law: never raises on any float array (NaN, ±inf, negatives, zeros, duplicates, empty); returns either a
failed status with nan numbers or a finite alpha > 1 with x_min one of the (positive, finite) data values; invariant
to permutations (bit for bit) and to scaling (alpha and D unchanged, x_min scaled; checked to rounding).

iter_tensors / list_models: on random bytes, and on real checkpoints (torch.save zip, legacy torch.save, safetensors,
TorchScript, sharded safetensors index) that are truncated or have bytes overwritten, only HmuDiagError subclasses may
escape — never another exception, whatever the bytes.
"""
from __future__ import annotations

import io
import json
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hmu_diag.errors import HmuDiagError

fits = pytest.importorskip("hmu_diag.fits.powerlaw", reason="fit_power_law not written yet")
load = pytest.importorskip("hmu_diag.load", reason="loaders not written yet")
fit_power_law = fits.fit_power_law

FIT_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LOAD_SETTINGS = settings(max_examples=60, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

any_floats = arrays(np.float64, st.integers(0, 60),
                    elements=st.floats(allow_nan=True, allow_infinity=True, width=64))
# ESD-like data: positive, spread over decades, with ties and heavy tails
positive = arrays(np.float64, st.integers(2, 120),
                  elements=st.one_of(st.floats(1e-6, 1e6), st.sampled_from([1.0, 2.0, 3.0, 1e-3])))


def check_contract(fit, data: np.ndarray) -> None:
    """The documented outcome: failed + nan, or ok + finite alpha > 1 with x_min among the positive finite data."""
    assert isinstance(fit.status, str)
    if fit.status == "ok":
        good = data[np.isfinite(data) & (data > 0)]
        assert math.isfinite(fit.alpha) and fit.alpha > 1.0
        assert fit.xmin in good
        assert 0.0 <= fit.D <= 1.0 and math.isfinite(fit.sigma) and fit.sigma >= 0
        assert 1 <= fit.n_tail <= good.size and fit.n_tail == np.count_nonzero(good >= fit.xmin)
    else:
        assert fit.status.startswith("failed: ") and len(fit.status) > len("failed: ")
        assert math.isnan(fit.alpha) and math.isnan(fit.xmin) and math.isnan(fit.D)


def same_fit(a, b) -> bool:
    """Every field equal, NaN equal to NaN."""
    def eq(x, y):
        return (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)) or x == y
    return all(eq(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)


@FIT_SETTINGS
@given(any_floats)
def test_fit_never_raises_and_keeps_the_contract(data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from log(0), 0/0 ... either
        fit = fit_power_law(data)
    check_contract(fit, data)


@FIT_SETTINGS
@given(positive)
def test_fit_on_positive_data_keeps_the_contract(data):
    check_contract(fit_power_law(data), data)


@FIT_SETTINGS
@given(positive, st.randoms(use_true_random=False))
def test_fit_is_invariant_to_permutation(data, rnd):
    shuffled = data.copy()
    rnd.shuffle(shuffled)
    assert same_fit(fit_power_law(data), fit_power_law(shuffled))


@FIT_SETTINGS
@given(positive, st.one_of(st.integers(-20, 20).map(lambda j: 2.0 ** j), st.floats(1e-3, 1e3)))
def test_fit_is_invariant_to_scaling(data, c):
    """alpha(cx) = alpha(x), D(cx) = D(x), xmin(cx) = c·xmin(x): the model is scale-free.

    Scaling changes log(x) by rounding only, so the numbers agree to ~1e-9; where two candidates' D tie to
    rounding, the argmin may move between them: then the fit at the other x_min must have the same D.
    """
    a, b = fit_power_law(data), fit_power_law(data * c)
    assume(np.all(np.isfinite(data * c)) and np.all(data * c > 0))
    assert a.status.startswith("failed") == b.status.startswith("failed")
    if a.status != "ok":
        return
    assert b.D == pytest.approx(a.D, rel=1e-7, abs=1e-12)
    if b.xmin == pytest.approx(c * a.xmin, rel=1e-12):
        assert b.alpha == pytest.approx(a.alpha, rel=1e-7)
        assert b.n_tail == a.n_tail
    else:  # a tie to rounding: the scaled fit's x_min gives the same D on the unscaled data
        other = fit_power_law(data, xmin=float(data[np.argmin(np.abs(data * c - b.xmin))]))
        assert other.D == pytest.approx(a.D, rel=1e-7, abs=1e-12)


# --------------------------------------------------------------------------------------------- loaders

def load_all(path: Path) -> None:
    """Everything a user run does with a path: list the models, stream every tensor of each."""
    for ref in load.list_models(path):
        for record in load.iter_tensors(ref):
            assert isinstance(record.tensor, torch.Tensor)


def only_hmu_errors(path: Path) -> None:
    try:
        load_all(path)
    except HmuDiagError as exc:
        message = str(exc)
        assert message and "\n" not in message  # one line
    # any other exception propagates and fails the test


def real_checkpoints() -> dict[str, bytes]:
    """Small real checkpoints, as bytes, in every format the loaders read."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    out: dict[str, bytes] = {}
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    out["model.pt"] = buffer.getvalue()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer, _use_new_zipfile_serialization=False)
    out["legacy.pt"] = buffer.getvalue()
    from safetensors.torch import save
    out["model.safetensors"] = save({k: v.contiguous() for k, v in model.state_dict().items()})
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buffer)
    out["scripted.pt"] = buffer.getvalue()
    return out


REAL = real_checkpoints()


@LOAD_SETTINGS
@given(st.binary(min_size=0, max_size=2048), st.sampled_from(["x.pt", "x.safetensors", "x.bin", "x", "x.ckpt"]),
       st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x04\x95", b"\x10\x00\x00\x00\x00\x00\x00\x00{",
                        bytes.fromhex("8a0a6cfc9c46f9206aa8")]))
def test_random_bytes_raise_only_hmu_errors(body, name, magic):
    """Random bytes, optionally behind a real format's magic number (zip, pickle, safetensors header, legacy torch)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(magic + body)
        only_hmu_errors(path)


@LOAD_SETTINGS
@given(st.sampled_from(sorted(REAL)), st.floats(0.0, 1.0), st.lists(st.tuples(st.floats(0.0, 1.0), st.binary(
    min_size=1, max_size=8)), max_size=3))
def test_truncated_or_damaged_real_checkpoints_raise_only_hmu_errors(name, keep, patches):
    data = bytearray(REAL[name][: int(len(REAL[name]) * keep)])
    for where, patch in patches:
        at = int(where * len(data))
        data[at:at + len(patch)] = patch
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(bytes(data))
        only_hmu_errors(path)


@LOAD_SETTINGS
@given(st.one_of(st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                              lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids,
                                                                                         max_size=4),
                              max_leaves=12).map(json.dumps),
                 st.dictionaries(st.text(max_size=10), st.sampled_from(["a.safetensors", "missing.safetensors",
                                                                        "../a.safetensors", "", "a.safetensors/x"]),
                                 max_size=4).map(lambda m: json.dumps({"metadata": {}, "weight_map": m}))),
       st.floats(0.0, 1.0))
def test_damaged_shard_index_raises_only_hmu_errors(index_text, shard_keep):
    """A sharded set whose index json is arbitrary text/JSON, next to a (possibly truncated) real shard."""
    shard = REAL["model.safetensors"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpt"
        folder.mkdir()
        (folder / "a.safetensors").write_bytes(shard[: int(len(shard) * shard_keep)])
        index = folder / "model.safetensors.index.json"
        index.write_text(index_text, encoding="utf-8")
        only_hmu_errors(index)
        only_hmu_errors(folder)


def test_undamaged_real_checkpoints_load():
    """Control for the properties above: the intact files do load (so the damage, not the setup, is tested)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in REAL.items():
            path = Path(tmp) / name
            path.write_bytes(data)
            names = {r.name for r in load.iter_tensors(path)}
            assert {"0.weight", "2.weight"} <= names, (name, names)


BATCH_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
esd_like = arrays(np.float64, st.integers(0, 80),
                  elements=st.one_of(st.floats(1e-12, 1e12), st.sampled_from([0.0, 1.0, 2.0, np.nan, np.inf, -1.0])))


@BATCH_SETTINGS
@given(st.lists(st.tuples(esd_like, st.sampled_from([0.05, 0.3, 0.5, 0.97, 1.0])), min_size=1, max_size=5))
def test_batched_htmp_and_mp_fits_never_raise_and_equal_the_fits_alone(batch):
    """MP and HTMP fits of arbitrary spectra (zeros, NaN, inf, negatives, ties, 24 decades) in one batch: no
    exception, no warning escapes, and each result equals that spectrum's fit alone, field by field."""
    from hmu_diag.fits.htmp import fit, fit_many
    from hmu_diag.fits.mp import fit_mp, fit_mp_many
    evals, gammas = [e for e, _ in batch], [g for _, g in batch]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mps, hts = fit_mp_many(evals, gammas), fit_many(evals, gammas)
        for e, g, mp, ht in zip(evals, gammas, mps, hts):
            assert same_fit(mp, fit_mp(e, g)) and same_fit(ht, fit(e, g))
            assert ht.status == "ok" or (ht.status.startswith("failed: ") and math.isnan(ht.kappa))


@BATCH_SETTINGS
@given(st.lists(esd_like, min_size=1, max_size=6), st.sampled_from([{}, {"method": "ww"}, {"xmax": 1e3},
                                                                     {"fix_fingers": "clip_xmax"}]))
def test_batched_power_law_fits_never_raise_and_equal_the_fits_alone(batch, options):
    """Power-law fits of arbitrary arrays in one batch (fit_power_law_many): no exception, no warning escapes, and
    each result equals that array's fit alone, field by field."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fits_ = fits.fit_power_law_many(batch, **options)
        for data, fit in zip(batch, fits_):
            assert same_fit(fit, fit_power_law(data, **options))
            if not options:
                check_contract(fit, data)


@FIT_SETTINGS
@given(any_floats)
def test_positive_sorted_is_the_sorted_positive_finite_values(data):
    """The values every fit starts from (hmu_diag.fits._values.positive_sorted), for any array and for it sorted
    (the fast path that returns a spectrum as it is): the sorted positive finite entries and the count of the rest."""
    from hmu_diag.fits._values import positive_sorted
    for values in (data, np.sort(data), np.sort(data)[::-1]):
        keep = np.isfinite(values) & (values > 0)
        x, dropped = positive_sorted(values)
        np.testing.assert_array_equal(x, np.sort(values[keep]))
        assert dropped == values.size - keep.sum() and x.dtype == np.float64


@FIT_SETTINGS
@given(st.lists(any_floats, min_size=1, max_size=5))
def test_positive_sorted_many_cleans_each_array_as_alone(arrays):
    """The batched form (one vectorised pass recognises the arrays that need no cleaning) gives, for each array and
    its sorted and reversed forms, what positive_sorted gives that array alone."""
    from hmu_diag.fits._values import positive_sorted, positive_sorted_many
    batch = [form for data in arrays for form in (data, np.sort(data), np.sort(data)[::-1])]
    for (x, dropped), values in zip(positive_sorted_many(batch), batch):
        alone, alone_dropped = positive_sorted(values)
        np.testing.assert_array_equal(x, alone)
        assert dropped == alone_dropped and x.dtype == np.float64
