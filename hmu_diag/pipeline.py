"""The analysis pipeline: source → named tensors → layer matrices → spectra → fits → one table row per layer.

Only this module knows the order of the stages.  :func:`analyze` is the main entry point of hmu-diag.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator

import pandas as pd

from .cache import ResultCache, result_key, source_fingerprint
from .choices import CONV_MODES, FIX_FINGERS, HTMP_ORIENTATIONS, SPECTRUM_MODES
from .errors import CheckpointError, OptionError, failed_status
from .executors import EXECUTORS, TaskFailure, run_tasks
from .load import ModelRef, iter_tensors, list_models
from .load.reparam import effective_weights
from .htmp_metrics import COLUMNS as HTMP_COLUMNS
from .metrics import COLUMN_ORDER, esd_rows
from .spectra.approx import tail_spectrum
from .spectra.weights import Spectrum, lapack_path, resolve_dtype, weight_spectrum
from .walk import LayerMatrix, walk

IDENTITY_COLUMNS = ["model", "layer", "kind", "part", "param", "shape", "view", "source", "status"]


@dataclass(frozen=True)
class AnalyzeOptions:
    """Options that change the numbers of an analysis (and so key the resume cache).

    conv : "flat" (conv kernels as out × in·k…) or "slices" (WeightWatcher's pooled per-kernel-position slices).
    min_evals : layers with fewer eigenvalues are skipped (reported with the reason).
    layers : regular expression; only layers whose name it matches (``re.search``) are analysed, the others are rows
        "skipped: not selected (layers=...)".  None: every layer.
    dtype : "float64" or "float32", the type the ESD is computed in.
    device : torch device for the eigensolver.
    htmp : add the HTMP / Marchenko-Pastur columns.
    htmp_orientation : "auto" (choose by KS distance), "direct" (λ ~ HTMP) or "inverse" (1/λ ~ HTMP).
    xmax, fix_fingers : power-law fit options (see :func:`hmu_diag.fit_power_law`).
    n_boot : CSN bootstrap replicates of the power-law fit's goodness-of-fit ``p_value`` (0: not computed).
    seed : seed of every random choice (bootstrap CIs and p-values, Krylov start blocks), for reproducible tables.
    spectrum : "exact" (every eigenvalue) or "approx": for a single matrix large enough that it pays, only the top
        ``top_k`` eigenvalues by block Krylov iteration, k doubled until the tail fits well inside them
        (:func:`hmu_diag.spectra.approx.tail_spectrum`); bulk metrics and MP/HTMP fits are then NaN.
    top_k : the starting k of ``spectrum="approx"``.
    """

    conv: str = "flat"
    min_evals: int = 10
    layers: str | None = None
    dtype: str = "float64"
    device: str = "cpu"
    htmp: bool = True
    htmp_orientation: str = "auto"
    xmax: float | None = None
    fix_fingers: str | None = None
    n_boot: int = 0
    seed: int = 0
    spectrum: str = "exact"
    top_k: int = 128

    def __post_init__(self) -> None:
        if self.conv not in CONV_MODES:
            raise OptionError(f"conv={self.conv!r}: choose one of {', '.join(CONV_MODES)}")
        if self.fix_fingers is not None and self.fix_fingers not in FIX_FINGERS:
            raise OptionError(f"fix_fingers={self.fix_fingers!r}: choose None, 'xmin_peak' or 'clip_xmax'")
        if self.htmp_orientation not in HTMP_ORIENTATIONS:
            raise OptionError(f"htmp_orientation={self.htmp_orientation!r}: choose one of "
                              f"{', '.join(HTMP_ORIENTATIONS)}")
        if self.spectrum not in SPECTRUM_MODES:
            raise OptionError(f"spectrum={self.spectrum!r}: choose one of {', '.join(SPECTRUM_MODES)}")
        if int(self.top_k) < 1:
            raise OptionError(f"top_k={self.top_k}: must be at least 1")
        if isinstance(self.n_boot, bool) or int(self.n_boot) != self.n_boot or self.n_boot < 0:
            raise OptionError(f"n_boot={self.n_boot!r}: must be a non-negative integer")
        if int(self.min_evals) < 2:
            raise OptionError(f"min_evals={self.min_evals}: must be at least 2")
        if self.layers is not None:
            try:
                re.compile(self.layers)
            except (re.error, TypeError) as exc:
                raise OptionError(f"layers={self.layers!r}: not a regular expression ({exc})") from None
        resolve_dtype(self.dtype)


def layer_identity(model: str, lm: LayerMatrix) -> dict[str, Any]:
    """The identity columns of one layer's row."""
    return {"model": model, "layer": lm.layer, "kind": lm.kind, "part": lm.part, "param": lm.param,
            "shape": "x".join(map(str, lm.shape)), "view": lm.view, "source": "weights"}


def is_skipped(lm: LayerMatrix) -> bool:
    """True for a walker record that has no matrix to analyse (its row is identity plus the skip reason)."""
    return lm.skip_reason is not None or lm.matrices is None


def skipped_row(model: str, lm: LayerMatrix) -> dict[str, Any]:
    """The row of a skipped tensor: identity and ``status = "skipped: <reason>"``."""
    row = layer_identity(model, lm)
    row["status"] = f"skipped: {lm.skip_reason}"
    return row


def analyze_layer(model: str, lm: LayerMatrix, options: AnalyzeOptions) -> dict[str, Any]:
    """One row of the per-layer table: identity, status and (when analysable) every metric; raises what the
    analysis raises.  :func:`analyze_layers` does many layers at once."""
    if is_skipped(lm):
        return skipped_row(model, lm)
    return _layer_row(model, lm, _metric_rows([layer_spectrum(lm, options)], options)[0])


def _metric_rows(spectra: list[Spectrum], options: AnalyzeOptions) -> list[dict[str, Any]]:
    """The metric columns of each spectrum (:func:`hmu_diag.metrics.esd_rows` with the analysis options)."""
    return esd_rows(spectra, xmax=options.xmax, fix_fingers=options.fix_fingers, n_boot=options.n_boot,
                    htmp=options.htmp, htmp_orientation=options.htmp_orientation, seed=options.seed)


def _layer_row(model: str, lm: LayerMatrix, metrics: dict[str, Any]) -> dict[str, Any]:
    """Identity columns + metric columns; the status is the power-law fit's."""
    row = layer_identity(model, lm)
    row.update(metrics)
    row["status"] = row["fit_status"]
    return row


def analyze_layers(layers: list[tuple[str, LayerMatrix]],
                   options: AnalyzeOptions) -> list[dict[str, Any] | TaskFailure]:
    """The rows of several analysable layers ``(model, layer matrix)``: each layer's spectrum (torch's before scipy's,
    :func:`hmu_diag.spectra.weights.lapack_path`), then the metrics of all of them by
    :func:`hmu_diag.metrics.esd_rows`, whose MP/HTMP fits run as one batch (a small layer's fits cost numpy's
    per-call overhead, so a batch of them costs little more than one).  Every row is the same as that layer's row
    alone.  A layer whose analysis raises gets a :class:`TaskFailure` in its place and the others are
    unaffected (a batch that raises is redone layer by layer)."""
    results: list[dict[str, Any] | TaskFailure | None] = [None] * len(layers)
    spectra: list[tuple[int, Spectrum]] = []
    # the spectra torch computes first, then those of scipy's LAPACK (see spectra.weights.lapack_path)
    for position in sorted(range(len(layers)), key=lambda p: _lapack_spectrum(layers[p][1], options)):
        try:
            spectra.append((position, layer_spectrum(layers[position][1], options)))
        except Exception as exc:  # noqa: BLE001 -- one layer's failure is reported in its row
            results[position] = TaskFailure(position, type(exc).__name__, str(exc))
    spectra.sort(key=lambda entry: entry[0])

    try:
        computed: list[dict[str, Any] | TaskFailure] = _metric_rows([spectrum for _, spectrum in spectra], options)
    except Exception:  # noqa: BLE001 -- redo one by one, so that only the layer that raises fails
        computed = []
        for position, spectrum in spectra:
            try:
                computed.extend(_metric_rows([spectrum], options))
            except Exception as exc:  # noqa: BLE001
                computed.append(TaskFailure(position, type(exc).__name__, str(exc)))
    for (position, _), metrics in zip(spectra, computed):
        model, lm = layers[position]
        results[position] = metrics if isinstance(metrics, TaskFailure) else _layer_row(model, lm, metrics)
    return results


def _lapack_spectrum(lm: LayerMatrix, options: AnalyzeOptions) -> bool:
    """Whether :func:`layer_spectrum` computes this layer's ESD with scipy's LAPACK (not torch)."""
    return options.spectrum != "approx" and lapack_path(lm.matrices, options.device)


def layer_spectrum(lm: LayerMatrix, options: AnalyzeOptions) -> Spectrum:
    """The ESD of one analysable layer: exact, or (``spectrum="approx"``, single matrices) its top by block Krylov."""
    if options.spectrum == "approx" and lm.matrices.shape[0] == 1:
        return tail_spectrum(lm.matrices[0], options.top_k, dtype=options.dtype, device=options.device,
                             seed=options.seed)
    return weight_spectrum(lm.matrices, dtype=options.dtype, device=options.device)


def iter_model_layers(source: Any, options: AnalyzeOptions, *,
                      trust_pickle: bool = False) -> Iterator[tuple[ModelRef, LayerMatrix]]:
    """(model, layer matrix) for every matrix of every model in ``source``, streamed one tensor at a time.

    A source of one model raises its :class:`~hmu_diag.errors.CheckpointError`.  In a source of several (a directory,
    e.g. a training run's folder beside ``optimizer.pt`` or ``training_args.bin``) a file that cannot be read as a
    model is one record, ``"not read as a model: <why>"`` with kind ``file``, and the other models are analysed.
    """
    selected = re.compile(options.layers).search if options.layers is not None else None
    refs = list_models(source, trust_pickle=trust_pickle)
    for ref in refs:
        try:
            records = effective_weights(iter_tensors(ref.source, trust_pickle=trust_pickle))
            for lm in walk(records, conv=options.conv, min_evals=options.min_evals):
                if selected is not None and not is_skipped(lm) and not selected(lm.layer):
                    lm = replace(lm, matrices=None, skip_reason=f"not selected (layers={options.layers!r})")
                yield ref, lm
        except CheckpointError as exc:
            if len(refs) == 1:
                raise
            yield ref, LayerMatrix("", "file", "", "", (), "", None, f"not read as a model: {exc}")


def iter_layers(source: Any, options: AnalyzeOptions, *, trust_pickle: bool = False) -> Iterator[tuple[str, LayerMatrix]]:
    """(model name, layer matrix) for every matrix of every model in ``source``, streamed."""
    for ref, lm in iter_model_layers(source, options, trust_pickle=trust_pickle):
        yield ref.name, lm


#: layers analysed together in a serial run (their MP/HTMP fits form one batch), at most this many ...
BATCH_LAYERS = 64
#: ... and at most this many matrix entries in all (the matrices of a batch are held until its spectra are done)
BATCH_ELEMENTS = 1 << 22


def _analyze_task(task: tuple[list[tuple[str, LayerMatrix]], AnalyzeOptions]) -> list[dict[str, Any] | TaskFailure]:
    """Top-level (picklable) task for the executors: the rows of a batch of layers."""
    return analyze_layers(*task)


def failure_row(model: str, lm: LayerMatrix, failure: TaskFailure) -> dict[str, Any]:
    """The row of a layer whose analysis raised (or whose worker died): identity plus the reason."""
    row = layer_identity(model, lm)
    row["status"] = failed_status(failure.error_type, failure.message)
    return row


def compute_spectra(source: Any, *, trust_pickle: bool = False, **options: Any) -> dict[tuple[str, str], Spectrum]:
    """The ESD of every analysable layer, keyed by (model, layer); options as for :func:`analyze`."""
    opts = AnalyzeOptions(**options)
    return {(model, lm.layer): layer_spectrum(lm, opts)
            for model, lm in iter_layers(source, opts, trust_pickle=trust_pickle)
            if not is_skipped(lm)}


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows → DataFrame with the identity, metric and HTMP columns first, in one stable order (cached rows are
    stored with sorted keys, so the order must not depend on the rows)."""
    present = dict.fromkeys(itertools.chain.from_iterable(rows))          # every column, in first-seen order
    known = [c for c in COLUMN_ORDER + list(HTMP_COLUMNS) if c in present]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(IDENTITY_COLUMNS + known + list(present))))


def analyze(source: Any, *, conv: str = "flat", min_evals: int = 10, layers: str | None = None,
            dtype: str = "float64", device: str = "cpu", htmp: bool = True, xmax: float | None = None,
            fix_fingers: str | None = None, n_boot: int = 0, seed: int = 0, htmp_orientation: str = "auto",
            spectrum: str = "exact", top_k: int = 128, trust_pickle: bool | str = False, n_jobs: int | None = 1,
            executor: str = "local", scheduler: Any = None, cache_dir: str | None = None,
            progress: bool = False) -> pd.DataFrame:
    r"""Analyse every weight matrix of a model (or of every model in a directory): one row per matrix.

    Parameters
    ----------
    source : an ``nn.Module``, a state dict, a checkpoint path (.pt/.pth/.bin/.ckpt, .safetensors, sharded
        ``*.safetensors.index.json``, TorchScript) or a directory of checkpoints (one model each).
    conv : "flat" (default; conv kernels viewed as out × in·k…) or "slices" (WeightWatcher-compatible pooled slices).
    min_evals : matrices with fewer eigenvalues are skipped, with the reason in ``status``.
    layers : regular expression selecting the layers to analyse by name (``re.search``, e.g. ``"attn"`` or
        ``r"^h\.(0|11)\."``); the others are rows ``skipped: not selected (...)``.  None (default): every layer.
    dtype : "float64" (default) or "float32": the type the ESD is computed in (reported in column ``dtype``).
    device : torch device of the eigensolver ("cpu", "cuda").
    htmp : also fit Marchenko-Pastur and HTMP and add their columns.
    xmax, fix_fingers : power-law fit options, see :func:`hmu_diag.fit_power_law`.
    n_boot : CSN semi-parametric bootstrap replicates of the power-law goodness-of-fit ``p_value`` (Clauset,
        Shalizi & Newman 2009, sec. 4.1: p = share of replicates, drawn from the fitted tail and the resampled body,
        whose refitted KS distance exceeds the data's; p < 0.1 rejects the power law).  0 (default): not computed
        (NaN); each replicate is one more fit per layer, and 100 give p to about +-0.05.
    seed : seed for every random step (deterministic tables).
    trust_pickle : False (default: a pickle that needs code to load is refused), "stubs" (torch checkpoints: read the
        tensors, every object that needs code replaced by an inert placeholder; nothing from the file runs) or True
        (allow pickles that execute code on load: only for checkpoints you trust).
    htmp_orientation : "auto" (default: the orientation with the smaller KS distance), "direct" or "inverse".
    spectrum, top_k : "exact" (default) or "approx": for very large single matrices only the top ``top_k``
        eigenvalues (doubled as needed) by randomized block Krylov, when that is cheaper than the exact ESD; the
        ``esd_method`` column says which; columns that need the whole ESD are then NaN.
    n_jobs : layers analysed in parallel by ``executor``; 1 (default) runs in this process, where consecutive layers
        (up to ``BATCH_LAYERS`` = 64 of them, ``BATCH_ELEMENTS`` = 4M matrix entries in all) are analysed as one
        batch whose MP/HTMP fits share their array operations (:func:`analyze_layers`).  Results are the same
        either way (to floating-point rounding when BLAS thread counts differ).
    executor : "local" (a process pool of ``n_jobs`` workers when n_jobs > 1) or "dask" (one task per layer on the
        Dask distributed cluster at ``scheduler``, an address like "tcp://host:8786" or a ``distributed.Client``).
    cache_dir : folder of per-layer results, written atomically as each layer finishes and keyed by the checkpoint's
        content, the options and the layer; rerunning the same command reuses them (an interrupted run resumes).
        In-memory models are never cached.
    progress : show a progress bar on stderr (only when stderr is a terminal).

    Returns
    -------
    DataFrame with the identity columns ``model, layer, kind, part, param, shape, view, source, status`` and the metric
    columns of :func:`hmu_diag.metrics.esd_row`.  ``status`` is "ok", "skipped: <reason>" or "failed: <reason>".
    """
    options = AnalyzeOptions(conv=conv, min_evals=min_evals, layers=layers, dtype=dtype, device=device, htmp=htmp,
                             htmp_orientation=htmp_orientation, xmax=xmax, fix_fingers=fix_fingers, n_boot=n_boot,
                             seed=seed, spectrum=spectrum, top_k=top_k)
    if executor not in EXECUTORS:
        raise OptionError(f"executor={executor!r}: choose one of {', '.join(EXECUTORS)}")
    cache = ResultCache(cache_dir) if cache_dir is not None else None
    rows: list[dict[str, Any] | None] = []   # final rows in layer order; None = computed by a task
    pending: list[tuple[int, str | None, str, LayerMatrix]] = []   # (row slot, cache key, model, layer) per task
    fingerprints: dict[str, str | None] = {}

    serial = executor == "local" and (n_jobs or 1) == 1
    # a serial run batches small layers (their fits share numpy calls); a parallel one sends each layer as a task
    batch_layers = BATCH_LAYERS if serial else 1
    batches: list[range] = []                # the pending entries of each task, in task order

    def tasks() -> Iterator[tuple[list[tuple[str, LayerMatrix]], AnalyzeOptions]]:
        batch: list[tuple[str, LayerMatrix]] = []
        elements = 0
        for ref, lm in layer_tasks():
            batch.append((ref.name, lm))
            elements += lm.matrices.numel()
            if len(batch) >= batch_layers or elements >= BATCH_ELEMENTS:
                batches.append(range(len(pending) - len(batch), len(pending)))
                yield batch, options
                batch, elements = [], 0
        if batch:
            batches.append(range(len(pending) - len(batch), len(pending)))
            yield batch, options

    def layer_tasks() -> Iterator[tuple[ModelRef, LayerMatrix]]:
        for ref, lm in iter_model_layers(source, options, trust_pickle=trust_pickle):
            if is_skipped(lm):       # no work: its row is written here, not sent to an executor or the cache
                rows.append(skipped_row(ref.name, lm))
                continue
            key = None
            if cache is not None:
                if ref.name not in fingerprints:
                    fingerprints[ref.name] = source_fingerprint(ref)
                if fingerprints[ref.name] is not None:
                    key = result_key(fingerprints[ref.name], f"{ref.name}/{lm.layer}", options_dict(options))
                    cached = cache.get(key)
                    if cached is not None:
                        rows.append(cached)
                        continue
            # only the identity is kept for the final table: the tensors go with the task, so nothing holds a
            # finished layer's matrix (memory stays bounded by the layers in flight, not the model)
            pending.append((len(rows), key, ref.name, replace(lm, matrices=None)))
            rows.append(None)
            yield ref, lm

    def layer_results(index: int, result: Any) -> list[Any]:
        """A task's result as one entry per pending layer (a failed task fails each of its layers)."""
        return [result] * len(batches[index]) if isinstance(result, TaskFailure) else result

    def store(index: int, result: Any) -> None:
        for entry, layer_result in zip(batches[index], layer_results(index, result)):
            key = pending[entry][1]
            if key is not None and not isinstance(layer_result, TaskFailure):
                cache.put(key, layer_result)

    results = run_tasks(_analyze_task, tasks(), executor="serial" if serial else executor, n_jobs=n_jobs,
                        scheduler=scheduler, progress=progress, on_result=store)
    for index, result in enumerate(results):
        for entry, layer_result in zip(batches[index], layer_results(index, result)):
            slot, _, model, lm = pending[entry]
            rows[slot] = failure_row(model, lm, layer_result) if isinstance(layer_result, TaskFailure) else layer_result
    return to_frame(rows)


def options_dict(options: AnalyzeOptions) -> dict[str, Any]:
    """The options as a plain dict (for summaries and cache keys)."""
    return asdict(options)
