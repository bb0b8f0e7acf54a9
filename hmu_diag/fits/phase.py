"""The 5+1 phases of training (Martin & Mahoney, JMLR 22(165) 2021, Fig. 12) decided from MP and HTMP fits.

Hodgkinson, Wang & Mahoney (ICML 2025, Fig. 2) reproduce the phases with the HTMP family: the first three have an
MP bulk (kappa = inf) and differ by outliers; the last three have kappa = 5.5, 1.9 and 1e-3 at gamma = 0.3255
(research note htmp.md sec. 5-7).  Rules, applied in this order to one layer's spectrum:

1. ``"rank-collapse"`` - a fraction >= ``collapse_fraction`` (default 0.1) of the eigenvalues is zero (``rank_loss``
   plus non-positive values).  This needs no fit, so it holds even where both fits fail (a rank-1 or all-zero layer).
2. ``"undetermined"`` - otherwise, when both the MP and the HTMP fit failed (too few or degenerate eigenvalues).
3. ``"rank-collapse"`` - the HTMP fit is sure that the law is near its kappa -> 0 limit, i.i.d.
   Gamma(shape delta) eigenvalues whose lower tail rho ~ lambda^(delta-1) piles the mass at zero (htmp.md sec. 3.4):
   kappa_hi < ``kappa_collapse`` (default 0.1) and delta(kappa_hi) = kappa_hi (1-gamma)/(2 gamma) < ``delta_collapse``
   (default 0.1, the delta of kappa = 0.1 at Fig. 2's gamma = 0.3255).  Both are needed: at small gamma (wide
   layers, e.g. a depthwise conv's 672 x 25 view, gamma = 0.037) kappa = 0.05 still gives delta = 0.65, a Gamma
   shape with no pile-up at zero; near gamma = 1, delta is ~0 for every kappa and only kappa -> 0 means collapse.
4. kappa finite (the HTMP fit tells the bulk from MP, see :func:`hmu_diag.fits.htmp.fit`) and HTMP describes the
   spectrum better than MP (KS distance ``htmp.D < mp.D``; otherwise a deviation that HTMP does not capture is
   not read as a phase): ``"heavy-tailed"`` if kappa <= ``kappa_heavy`` (default 3, between Fig. 2's 1.9 and
   5.5; direct orientation), or, for an inverse fit (1/lambda ~ HTMP, upper power-law tail alpha = 1 + delta),
   if 1 + delta <= ``alpha_heavy`` (default 6, HTSR's heavy-tail bound); otherwise ``"bulk-decay"``.
5. kappa = inf (MP bulk), with the MP fit's spikes above the Tracy-Widom edge (:func:`hmu_diag.fits.mp.fit_mp`):
   no spike: ``"random-like"``; spikes separated from the bulk (above ``(1 + bleed_margin) bulk_max``, default
   margin 0.1) at least as many as those just past the edge: ``"bulk+spikes"``; otherwise ``"bleeding-out"``.
"""
from __future__ import annotations

import math

import numpy as np

from hmu_diag.fits.htmp import HTMPFit
from hmu_diag.fits.mp import MPFit

__all__ = ["PHASES", "UNDETERMINED", "classify_phase"]

PHASES = ("random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed", "rank-collapse")
UNDETERMINED = "undetermined"


def classify_phase(evals, mp: MPFit, htmp: HTMPFit, *, rank_loss: int = 0, collapse_fraction: float = 0.1,
                   kappa_collapse: float = 0.1, delta_collapse: float = 0.1, kappa_heavy: float = 3.0,
                   alpha_heavy: float = 6.0, bleed_margin: float = 0.1) -> str:
    """Phase of one layer's spectrum: one of :data:`PHASES` or ``"undetermined"`` (rules: module docstring).

    ``evals``: the eigenvalues both fits saw; ``rank_loss``: zero eigenvalues removed before (not in ``evals``).
    """
    x = np.asarray(evals, dtype=np.float64).ravel()
    n_zero = int(rank_loss) + int(np.sum(x <= 0))         # NaN is no eigenvalue at all, not a zero one
    total = x.size + int(rank_loss)
    if total and n_zero / total >= collapse_fraction:
        return "rank-collapse"
    if not mp.ok and not htmp.ok:
        return UNDETERMINED
    if htmp.ok and htmp.kappa_hi < kappa_collapse \
            and htmp.kappa_hi * (1.0 - htmp.gamma) / (2.0 * htmp.gamma) < delta_collapse:
        return "rank-collapse"
    if htmp.ok and math.isfinite(htmp.kappa) and (not mp.ok or htmp.D < mp.D):
        heavy = htmp.kappa <= kappa_heavy if htmp.orientation == "direct" else htmp.pred_alpha <= alpha_heavy
        return "heavy-tailed" if heavy else "bulk-decay"
    if not mp.ok:
        return UNDETERMINED
    if mp.num_spikes == 0:
        return "random-like"
    n_sep = int(np.sum(x > (1.0 + bleed_margin) * mp.bulk_max))
    return "bulk+spikes" if n_sep >= max(1, mp.num_spikes - n_sep) else "bleeding-out"
