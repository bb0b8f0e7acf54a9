"""Approximate top of the spectrum of a very large matrix, for when only the heavy tail is needed.

WeightWatcher 0.7.7 silently skips matrices with N > 50,000 rows or M·rf > 15,000 (e.g. a 128k-token embedding).
The exact ESD needs the M x M Gram matrix: N·M² flops and an M³ eigensolve.  The power-law fit only looks at the tail
λ ≥ x_min, usually the top few percent of the M eigenvalues, so the top k eigenvalues of WᵀW suffice.

Algorithm: randomized block Krylov iteration (Musco & Musco 2015, "Randomized block Krylov methods for stronger and
faster approximate singular value decomposition", NeurIPS; Halko, Martinsson & Tropp 2011, SIAM Rev. 53:217, §4.5),
applied to A = W or Wᵀ, whichever is tall (N x M, N ≥ M), with a block of b = k + oversample columns:

    Ω ~ N(0, 1)^{M x b} (seeded),  Y_0 = qr(A Ω)
    Y_j = qr(A qr(Aᵀ Y_{j−1})),  j = 1..n_iter                     # re-orthonormalised power steps
    Q = qr([Y_0 Y_1 … Y_n_iter])   (N x b(n_iter+1), the block Krylov space of A Aᵀ)
    λ_i ≈ σ_i(Qᵀ A)²,  i = 1..k                                        # Rayleigh-Ritz

Cost (3·n_iter + 2)·2·N·M·b flops for the products + 2·N·(b(n_iter+1))² for the last QR, against N·M² (one triangle
of WᵀW by BLAS ``syrk``) + (4/3)·M³ for the exact Gram eigendecomposition — a speed-up of about
M / (2b·(3·n_iter + 2)), so on a CPU it pays only when k ≪ M/40 (e.g. k ≤ 80 for M = 4096 at the default
n_iter = 6); otherwise ``method="auto"`` computes the exact spectrum (``krylov_is_cheaper``).  Working set
N·b·(n_iter+1) + M·b·(n_iter+1) numbers besides W (W is used in place when it already has ``dtype`` on ``device``).
Q is orthonormal, so every Ritz value is a lower bound, σ_i(Qᵀ A) ≤ σ_i(A) (Cauchy interlacing): approximate
eigenvalues are never too large.  The error is smallest at the top and grows towards the k-th value, more slowly
than for plain subspace iteration with the same number of products (Musco & Musco Thm. 1: gap-free error ~ 1/n_iter²
instead of 1/n_iter).  Measured (float64, 4000 x 1000, k = 100,
n_iter = 5): Student-t(3) entries max relative error 4e-3 at the k-th eigenvalue and 2e-13 at the top; Gaussian
(flat MP bulk, the hardest case) 4e-3 and 3e-5.  ``benchmarks/bench_approx.py``, 20000 x 4096 Student-t(3)/√N in
float32, 1 thread on a loaded 2-core VM: exact float64 112 s, exact float32 44 s; top-32 / 64 / 128 in 15 / 23 / 50 s
(7.6 / 4.8 / 2.2x faster than exact float64), relative error 5e-7 at the top and 1-2 % at the k-th value (the k-th
lies in the flat bulk edge there), |Δα| = 0.13 / 0.028 / 0.005 with the exact x_min at the 32nd value: the tail fit is
only as good as the values near x_min, so take k ≥ 2-4× the tail size.

Fitting a power law to a partial spectrum
-----------------------------------------
For every candidate x_min, the Clauset-Shalizi-Newman fit uses only the values x ≥ x_min: the MLE
α̂ = 1 + n_tail / Σ_{x_i ≥ x_min} ln(x_i/x_min) and the KS distance between the tail's empirical CDF (renormalised to
the tail: (#{x < u} − #{x < x_min}) / n_tail) and 1 − (u/x_min)^{1−α̂}.  Neither depends on the values below x_min, nor
on the total count n.  Hence, with the top-k eigenvalues λ_(M−k+1..M) passed to ``hmu_diag.fit_power_law``:

* every candidate x_min inside the top k gets exactly the α̂, D and σ it gets in the full fit;
* when the full fit's x_min lies within the top k (and no candidate below ties its D), the top-k fit returns the
  same x_min, α, D, σ and n_tail (tested in ``tests/test_approx.py`` against ``powerlaw.Fit`` on the full spectrum);
* ``n`` of the returned fit is k; report the full count M (the number of eigenvalues, ``num_evals``) separately; the
  fraction in the tail is n_tail / M;
* quantities that need the bulk are unavailable: the bootstrap p-value (it resamples values below x_min), norms,
  stable rank, entropy and the MP/HTMP fits;
* the approximation error grows towards the k-th value, so with approximate eigenvalues keep x_min well inside the
  top k (n_tail ≤ k/2): measured |Δα| 0.13 with n_tail = k, 0.005 with n_tail = k/4;
* the converse is not guaranteed: when the top-k fit puts x_min at (or next to) the smallest available value, the
  full-spectrum x_min may lie lower — double k and refit until x_min is well inside the top k.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import OptionError
from ..fits.powerlaw import fit_power_law
from .weights import Spectrum, dtype_name, resolve_dtype, weight_spectrum, zero_tolerance

#: defaults of the Krylov run (module docstring)
N_ITER, OVERSAMPLE = 6, 10


def _tall(w: torch.Tensor | np.ndarray) -> torch.Tensor:
    """W as a 2-D torch tensor oriented N x M with N ≥ M (a view, no copy)."""
    t = torch.as_tensor(w)
    if t.dim() == 3 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2:
        raise OptionError(f"approx_top_eigenvalues needs one 2-D matrix, got shape {tuple(t.shape)}")
    return t if t.shape[0] >= t.shape[1] else t.T


def krylov_is_cheaper(n: int, m: int, block: int, n_iter: int) -> bool:
    """True when the block Krylov run (module docstring) needs fewer flops than the exact Gram eigendecomposition and
    its space (block·(n_iter+1) columns) is smaller than M.

    Krylov: 2·N·M·b·(3·n_iter + 2) for the products + 2·N·(b(n_iter+1))² for the last QR.
    Exact:  N·M² for one triangle of WᵀW (BLAS ``syrk``) + (4/3)·M³ for the tridiagonal reduction of ``syevd``.
    """
    width = block * (n_iter + 1)
    krylov = 2 * n * m * block * (3 * n_iter + 2) + 2 * n * width ** 2
    exact = n * m * m + 4 * m ** 3 // 3
    return width < m and krylov < exact


def approx_top_eigenvalues(W: torch.Tensor | np.ndarray, k: int, *, n_iter: int = N_ITER, oversample: int = OVERSAMPLE,
                           seed: int = 0, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                           method: str = "auto") -> np.ndarray:
    """The k largest eigenvalues of the smaller Gram matrix of W (the top of its ESD, λ = σ², no 1/N rescaling).

    Parameters
    ----------
    W : a 2-D matrix (torch or numpy, any float dtype; bf16/fp16 are converted to ``dtype``), N x M or M x N.
    k : number of eigenvalues, 1 ≤ k ≤ min(rows, cols).
    n_iter : Krylov power steps (each 2 products of W with the block); error falls quickly with it, see the module
        docstring.
    oversample : block width beyond k (b = k + oversample), so the k-th value is not the last of the block.
    seed : seed of the Gaussian start block (drawn on the CPU, so a seed gives the same start on every device).
    device : torch device of the products and QR factorisations ("cpu", "cuda", ...).
    dtype : "float32" (default) or "float64": the working precision.
    method : "auto" (block Krylov when :func:`krylov_is_cheaper`, else the exact spectrum), "krylov" (always, as long
        as the Krylov space is smaller than min(rows, cols)) or "exact".

    Returns
    -------
    float64 array of the k largest eigenvalues (lower bounds of the exact ones), ascending like ``Spectrum.evals``.
    The exact values are the top k of :func:`hmu_diag.spectra.weights.weight_spectrum` (``method="exact"``, or
    "auto" when the Krylov run would cost more flops: roughly ``(k + oversample)·(3·n_iter + 2) ≥ min(rows, cols)``).
    """
    a = _tall(W)
    n, m = a.shape
    if not 1 <= int(k) <= m:
        raise OptionError(f"k={k}: need 1 <= k <= min(rows, cols) = {m}")
    if int(n_iter) < 0 or int(oversample) < 0:
        raise OptionError(f"n_iter={n_iter}, oversample={oversample}: must be >= 0")
    tdtype = resolve_dtype(dtype)
    if method not in ("auto", "krylov", "exact"):
        raise OptionError(f"method={method!r}: choose 'auto', 'krylov' or 'exact'")
    block = int(k) + int(oversample)
    krylov = {"auto": krylov_is_cheaper(n, m, block, int(n_iter)), "krylov": block * (int(n_iter) + 1) < m,
              "exact": False}[method]
    if not krylov:
        return weight_spectrum(a, dtype=tdtype, device=device).evals[-int(k):]
    a = a.to(device=device, dtype=tdtype)
    generator = torch.Generator().manual_seed(int(seed))
    omega = torch.randn(m, block, generator=generator, dtype=torch.float64).to(device=device, dtype=tdtype)
    blocks = [torch.linalg.qr(a @ omega).Q]
    for _ in range(int(n_iter)):
        blocks.append(torch.linalg.qr(a @ torch.linalg.qr(a.T @ blocks[-1]).Q).Q)
    q = torch.linalg.qr(torch.cat(blocks, dim=1)).Q
    sigma = torch.linalg.svdvals(q.T @ a)[: int(k)]
    return np.sort(sigma.to("cpu", torch.float64).numpy() ** 2)


def frobenius_sq(W: torch.Tensor, block_rows: int = 8192) -> float:
    """‖W‖_F² = Σ λ_i (the trace of the ESD), summed in float64 over row blocks (no full float64 copy)."""
    w = W.detach().reshape(W.shape[0], -1)
    return float(sum(torch.linalg.vector_norm(b, dtype=torch.float64) ** 2 for b in w.split(block_rows)))


def tail_spectrum(W: torch.Tensor, k: int, *, dtype: str | torch.dtype = "float64", device: str | torch.device = "cpu",
                  seed: int = 0) -> Spectrum:
    """The top of the ESD of one large matrix, enough for its power-law tail; the exact ESD when that is cheaper.

    Starts with the ``k`` largest eigenvalues (:func:`approx_top_eigenvalues`, block Krylov) and doubles k while the
    power-law fit of what it has fails (too few values) or puts x_min in the lower half of the available values
    (n_tail > k/2: the full fit's x_min may lie lower, module docstring).  Whenever the Krylov run would cost more
    flops than the exact eigendecomposition (:func:`krylov_is_cheaper`) the exact spectrum is returned instead
    (``method="exact"``).  The returned :class:`Spectrum` has ``method="top-k block Krylov"`` with the final k, and
    the exact trace ‖W‖_F².
    """
    a = _tall(W)
    n, m = a.shape
    tdtype = resolve_dtype(dtype)
    k = max(int(k), 1)
    while krylov_is_cheaper(n, m, k + OVERSAMPLE, N_ITER):
        evals = approx_top_eigenvalues(a, k, seed=seed, device=device, dtype=tdtype, method="krylov")
        zero_tol = zero_tolerance(evals, n, tdtype)
        fit = fit_power_law(evals[evals > zero_tol])
        if fit.ok and fit.n_tail <= k // 2:
            return Spectrum(evals=evals, N=n, M=m, n_matrices=1, dtype=dtype_name(tdtype), zero_tol=zero_tol,
                            method=f"top-{k} block Krylov", trace=frobenius_sq(a))
        k *= 2
    return weight_spectrum(a, dtype=tdtype, device=device)
