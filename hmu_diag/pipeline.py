"""The analysis pipeline: source → named tensors → layer matrices → spectra → fits → one table row per layer.

Only this module knows the order of the stages.  :func:`analyze` is the main entry point of hmu-diag.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterator

import pandas as pd

from .errors import OptionError
from .load import iter_tensors, list_models
from .metrics import esd_row
from .spectra.weights import Spectrum, resolve_dtype, weight_spectrum
from .walk import LayerMatrix, walk

CONV_MODES = ("flat", "slices")
FIX_FINGERS = (None, "xmin_peak", "clip_xmax")
IDENTITY_COLUMNS = ["model", "layer", "kind", "part", "param", "shape", "view", "source", "status"]


@dataclass(frozen=True)
class AnalyzeOptions:
    """Options that change the numbers of an analysis (and so key the resume cache).

    conv : "flat" (conv kernels as out × in·k…) or "slices" (WeightWatcher's pooled per-kernel-position slices).
    min_evals : layers with fewer eigenvalues are skipped (reported with the reason).
    dtype : "float64" or "float32", the type the ESD is computed in.
    device : torch device for the eigensolver.
    htmp : add the HTMP / Marchenko-Pastur columns.
    xmax, fix_fingers : power-law fit options (see :func:`hmu_diag.fit_power_law`).
    seed : seed of every random choice (bootstrap CIs), for reproducible tables.
    """

    conv: str = "flat"
    min_evals: int = 10
    dtype: str = "float64"
    device: str = "cpu"
    htmp: bool = True
    xmax: float | None = None
    fix_fingers: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.conv not in CONV_MODES:
            raise OptionError(f"conv={self.conv!r}: choose one of {', '.join(CONV_MODES)}")
        if self.fix_fingers not in FIX_FINGERS:
            raise OptionError(f"fix_fingers={self.fix_fingers!r}: choose None, 'xmin_peak' or 'clip_xmax'")
        if int(self.min_evals) < 2:
            raise OptionError(f"min_evals={self.min_evals}: must be at least 2")
        resolve_dtype(self.dtype)


def layer_identity(model: str, lm: LayerMatrix) -> dict[str, Any]:
    """The identity columns of one layer's row."""
    return {"model": model, "layer": lm.layer, "kind": lm.kind, "part": lm.part, "param": lm.param,
            "shape": "x".join(str(d) for d in lm.shape), "view": lm.view, "source": "weights"}


def analyze_layer(model: str, lm: LayerMatrix, options: AnalyzeOptions) -> dict[str, Any]:
    """One row of the per-layer table: identity, status and (when analysable) every metric."""
    row = layer_identity(model, lm)
    if lm.skip_reason is not None or lm.matrices is None:
        row["status"] = f"skipped: {lm.skip_reason}"
        return row
    spectrum = weight_spectrum(lm.matrices, dtype=options.dtype, device=options.device)
    row.update(esd_row(spectrum.evals, N=spectrum.N, M=spectrum.M, zero_tol=spectrum.zero_tol,
                       dtype=spectrum.dtype, xmax=options.xmax, fix_fingers=options.fix_fingers,
                       htmp=options.htmp, seed=options.seed))
    row["status"] = row["fit_status"]
    return row


def iter_layers(source: Any, options: AnalyzeOptions, *, trust_pickle: bool = False) -> Iterator[tuple[str, LayerMatrix]]:
    """(model name, layer matrix) for every matrix of every model in ``source``, streamed."""
    for ref in list_models(source, trust_pickle=trust_pickle):
        records = iter_tensors(ref.source, trust_pickle=trust_pickle)
        for lm in walk(records, conv=options.conv, min_evals=options.min_evals):
            yield ref.name, lm


def compute_spectra(source: Any, *, trust_pickle: bool = False, **options: Any) -> dict[tuple[str, str], Spectrum]:
    """The ESD of every analysable layer, keyed by (model, layer); options as for :func:`analyze`."""
    opts = AnalyzeOptions(**options)
    return {(model, lm.layer): weight_spectrum(lm.matrices, dtype=opts.dtype, device=opts.device)
            for model, lm in iter_layers(source, opts, trust_pickle=trust_pickle)
            if lm.skip_reason is None and lm.matrices is not None}


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows → DataFrame with the identity columns first, in a stable order."""
    frame = pd.DataFrame(rows)
    for column in IDENTITY_COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    rest = [c for c in frame.columns if c not in IDENTITY_COLUMNS]
    return frame[IDENTITY_COLUMNS + rest]


def analyze(source: Any, *, conv: str = "flat", min_evals: int = 10, dtype: str = "float64", device: str = "cpu",
            htmp: bool = True, xmax: float | None = None, fix_fingers: str | None = None, seed: int = 0,
            trust_pickle: bool = False, progress: bool = False) -> pd.DataFrame:
    """Analyse every weight matrix of a model (or of every model in a directory): one row per matrix.

    Parameters
    ----------
    source : an ``nn.Module``, a state dict, a checkpoint path (.pt/.pth/.bin/.ckpt, .safetensors, sharded
        ``*.safetensors.index.json``, TorchScript) or a directory of checkpoints (one model each).
    conv : "flat" (default; conv kernels viewed as out × in·k…) or "slices" (WeightWatcher-compatible pooled slices).
    min_evals : matrices with fewer eigenvalues are skipped, with the reason in ``status``.
    dtype : "float64" (default) or "float32": the type the ESD is computed in (reported in column ``dtype``).
    device : torch device of the eigensolver ("cpu", "cuda").
    htmp : also fit Marchenko-Pastur and HTMP and add their columns.
    xmax, fix_fingers : power-law fit options, see :func:`hmu_diag.fit_power_law`.
    seed : seed for every random step (deterministic tables).
    trust_pickle : allow pickles that execute code on load (only for checkpoints you trust).
    progress : show a progress bar on stderr.

    Returns
    -------
    DataFrame with the identity columns ``model, layer, kind, part, param, shape, view, source, status`` and the metric
    columns of :func:`hmu_diag.metrics.esd_row`.  ``status`` is "ok", "skipped: <reason>" or "failed: <reason>".
    """
    options = AnalyzeOptions(conv=conv, min_evals=min_evals, dtype=dtype, device=device, htmp=htmp, xmax=xmax,
                             fix_fingers=fix_fingers, seed=seed)
    layers = iter_layers(source, options, trust_pickle=trust_pickle)
    if progress:
        from tqdm import tqdm
        layers = tqdm(layers, desc="layers", unit="layer", leave=False)
    return to_frame([analyze_layer(model, lm, options) for model, lm in layers])


def options_dict(options: AnalyzeOptions) -> dict[str, Any]:
    """The options as a plain dict (for summaries and cache keys)."""
    return asdict(options)
