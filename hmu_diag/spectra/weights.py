"""Eigenvalues of weight matrices: the empirical spectral density (ESD) fed to every fit.

For a matrix W of shape (rows, cols) with N = max(rows, cols) and M = min(rows, cols), the ESD is the M eigenvalues of
the smaller Gram matrix (W Wᵀ if rows < cols, else Wᵀ W), i.e. the squared singular values λ_i = σ_i(W)², with no 1/N
rescaling — the convention of WeightWatcher (Martin & Mahoney 2021).  For a batch of B matrices (conv kernel slices) the
B·M eigenvalues are pooled into one ESD.

Computing λ from the Gram matrix with LAPACK ``syevd`` is 3–6x faster than an SVD (on the CPU a single matrix with
M ≥ 512 goes through scipy's BLAS ``syrk`` and ``syevd``; smaller ones, batches and other devices through
``torch.linalg.eigvalsh``); its absolute error is about ``eps · λ_max``, so eigenvalues below
``zero_tol = λ_max · N · eps(dtype)`` are numerically zero: they are counted in ``rank_loss`` and excluded from tail
fits (``Spectrum.nonzero``).  Large matrices are reduced to their Gram matrix in row blocks, so the float64 working
set is bounded by ``M² + block·M`` numbers, not ``N·M``.

Range: WᵀW squares the entries, so weights beyond ~1e154 (float64; ~1e19 in float32) overflow it and weights below
~1e-146 (~1e-16) underflow it to zero, which would read as rank loss.  When the result shows either (the eigensolver
fails, λ_max is not finite, 0 < λ_max < tiny/eps of the dtype, or λ_max = 0 for a nonzero W), W is scaled by the
power of two 2^-e that brings max|W| into [1/2, 1) - exact in binary floating point - and the eigenvalues are scaled
back by 4^e in float64.  Normal weights never take this path (it costs nothing unless triggered); eigenvalues that
float64 cannot hold (λ_max above ~1e308 or below ~1e-292) raise :class:`~hmu_diag.errors.HmuDiagError`, which the
layer's row reports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch
from scipy.linalg.blas import get_blas_funcs

from ..choices import ESD_DTYPES
from ..errors import HmuDiagError, OptionError

DTYPES = {name: getattr(torch, name) for name in ESD_DTYPES}
_GRAM_BLOCK_ROWS = 8192
#: smallest M sent through scipy's syrk + syevd on the CPU: below it torch's MKL eigvalsh was faster (measured on 2
#: cores: M = 160 3.0 vs 7.5 ms, M = 320 10.6 vs 13.8 ms; M = 768 104 vs 70 ms, M = 1000 158 vs 80 ms)
_SCIPY_MIN_M = 512


@dataclass(frozen=True)
class Spectrum:
    """The ESD of one layer.

    Attributes
    ----------
    evals : ascending float64 array of all B·M eigenvalues (squared singular values; no rescaling).
    N, M : larger and smaller dimension of each matrix.
    n_matrices : B, the number of matrices pooled (1 unless conv kernel slices are analysed).
    dtype : the floating-point type the eigenvalues were computed in ("float64" or "float32").
    zero_tol : eigenvalues ≤ zero_tol are numerically zero (``λ_max · N · eps(dtype)``).
    method : how the eigenvalues were computed: "exact", or "top-k block Krylov" when ``evals`` holds only the k
        largest of the B·M eigenvalues (:mod:`hmu_diag.spectra.approx`).
    trace : Σ λ_i = ‖W‖_F² over the whole ESD (exact also for a partial spectrum).
    """

    evals: np.ndarray = field(repr=False)
    N: int
    M: int
    n_matrices: int
    dtype: str
    zero_tol: float
    method: str = "exact"
    trace: float = float("nan")

    @property
    def rank_loss(self) -> int:
        """Number of numerically-zero eigenvalues."""
        return int(np.count_nonzero(self.evals <= self.zero_tol))

    @property
    def nonzero(self) -> np.ndarray:
        """Eigenvalues above ``zero_tol``: what tail fits see."""
        return self.evals[self.evals > self.zero_tol]

    @property
    def gamma(self) -> float:
        """Aspect ratio γ = M/N ≤ 1."""
        return self.M / self.N


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map ``"float64"``/``"float32"`` (or a torch dtype) to the torch dtype used for eigenvalues."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif dtype in DTYPES:
        return DTYPES[dtype]
    raise OptionError(f"dtype={dtype!r}: choose 'float64' or 'float32'")


def gram(matrices: torch.Tensor, *, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    """Smaller Gram matrix of each matrix in a (B, rows, cols) batch, as a (B, M, M) tensor in ``dtype`` on ``device``.

    Rows are converted block by block, so a tall float32 matrix never exists whole in float64.
    """
    b, rows, cols = matrices.shape
    tall = rows >= cols
    if b == 1 and max(rows, cols) > _GRAM_BLOCK_ROWS:
        w = matrices[0] if tall else matrices[0].T
        out = torch.zeros(cols if tall else rows, cols if tall else rows, dtype=dtype, device=device)
        for start in range(0, w.shape[0], _GRAM_BLOCK_ROWS):
            block = w[start:start + _GRAM_BLOCK_ROWS].to(device=device, dtype=dtype)
            out.addmm_(block.T, block)
        return out.unsqueeze(0)
    x = matrices.to(device=device, dtype=dtype)
    return x.mT @ x if tall else x @ x.mT


def _lapack_eigvalsh(w: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """Eigenvalues of the smaller Gram matrix of one CPU matrix: BLAS ``syrk`` and LAPACK ``syevd`` through scipy.

    ``syrk`` forms only one triangle of WᵀW (half the flops of a general product) and ``syevd`` reads only that
    triangle; measured on GPT-2-small shapes this is ~20% faster than ``torch.linalg.eigvalsh(W.T @ W)``.  Tall
    matrices with more than ``_GRAM_BLOCK_ROWS`` rows are accumulated block by block (``beta = 1``), converting one
    block at a time.
    """
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    syrk = get_blas_funcs("syrk", dtype=np_dtype)
    rows, cols = w.shape
    if max(rows, cols) <= _GRAM_BLOCK_ROWS:
        x = w.detach().to("cpu", dtype).contiguous().numpy()   # C order: x.T is in the Fortran order BLAS wants
        g = syrk(1.0, x.T, trans=0 if rows >= cols else 1, lower=1)      # x.T @ x, or x @ x.T for a wide matrix
    else:
        tall = w if rows >= cols else w.T
        g = None
        for start in range(0, tall.shape[0], _GRAM_BLOCK_ROWS):
            block = np.ascontiguousarray(tall[start:start + _GRAM_BLOCK_ROWS].detach().to("cpu", dtype).numpy())
            g = (syrk(1.0, block.T, lower=1) if g is None
                 else syrk(1.0, block.T, beta=1.0, c=g, lower=1, overwrite_c=1))
    return scipy.linalg.eigvalsh(g, lower=True, overwrite_a=True, check_finite=False, driver="evd")


def zero_tolerance(evals: np.ndarray, n: int, dtype: torch.dtype) -> float:
    """``λ_max · N · eps(dtype)``: eigenvalues at or below it are numerically zero (``evals`` ascending)."""
    lam_max = float(evals[-1]) if evals.size else 0.0
    return max(lam_max, 0.0) * n * float(torch.finfo(dtype).eps)


def weight_spectrum(matrices: torch.Tensor, *, dtype: str | torch.dtype = "float64",
                    device: str | torch.device = "cpu") -> Spectrum:
    """ESD of a (B, rows, cols) batch of matrices (or one 2-D matrix): eigenvalues of the smaller Gram matrix.

    Parameters
    ----------
    matrices : a 2-D matrix or a (B, rows, cols) batch whose B·min(rows, cols) eigenvalues are pooled.
    dtype : "float64" (default, accurate down to ``λ_max·N·1e-16``) or "float32" (faster, ``λ_max·N·1e-7``).
    device : torch device for the Gram product and ``eigvalsh`` ("cpu", "cuda", ...).
    """
    if matrices.dim() == 2:
        matrices = matrices.unsqueeze(0)
    tdtype = resolve_dtype(dtype)
    b, rows, cols = matrices.shape
    n, m = max(rows, cols), min(rows, cols)
    finfo = torch.finfo(tdtype)
    try:
        values = _gram_eigenvalues(matrices, tdtype, device)
        top = float(values[-1])
        in_range = math.isfinite(top) and not 0.0 < top < finfo.tiny / finfo.eps
        if top <= 0.0:                                # a zero matrix, or one whose Gram underflowed to zero
            in_range = not bool(torch.any(matrices != 0))
    except (np.linalg.LinAlgError, torch.linalg.LinAlgError):   # syevd fails on an overflowed (inf) Gram matrix
        in_range = False
    if not in_range:
        values = _rescaled_gram_eigenvalues(matrices, tdtype, device)
    zero_tol = zero_tolerance(values, n, tdtype)
    return Spectrum(evals=values, N=n, M=m, n_matrices=b, dtype=dtype_name(tdtype), zero_tol=zero_tol,
                    trace=float(values.sum()))


def lapack_path(matrices: torch.Tensor, device: str | torch.device = "cpu") -> bool:
    """True when :func:`weight_spectrum` computes this (B, rows, cols) batch with scipy's BLAS ``syrk`` and LAPACK
    ``syevd`` (one CPU matrix with M >= ``_SCIPY_MIN_M``), False when with ``torch.linalg.eigvalsh``.

    The two run on different thread pools: OpenBLAS's threads keep spinning for a while after a large ``syevd`` and
    slow down torch's OpenMP team if it starts right away, so callers computing many spectra do the torch ones first
    (:func:`hmu_diag.pipeline.analyze_layers`: 4 large and 20 small matrices interleaved 175-187 ms, small first
    164-168 ms, on 2 cores)."""
    b, rows, cols = matrices.shape if matrices.dim() == 3 else (1, *matrices.shape)
    return b == 1 and min(rows, cols) >= _SCIPY_MIN_M and torch.device(device).type == "cpu"


def _gram_eigenvalues(matrices: torch.Tensor, dtype: torch.dtype, device: str | torch.device) -> np.ndarray:
    """Ascending float64 eigenvalues of the smaller Gram matrices of a (B, rows, cols) batch, pooled."""
    if lapack_path(matrices, device):
        return np.sort(_lapack_eigvalsh(matrices[0], dtype).astype(np.float64))
    evals = torch.linalg.eigvalsh(gram(matrices, dtype=dtype, device=device))
    return np.sort(evals.reshape(-1).to("cpu", torch.float64).numpy())


def _rescaled_gram_eigenvalues(matrices: torch.Tensor, dtype: torch.dtype, device: str | torch.device) -> np.ndarray:
    """:func:`_gram_eigenvalues` of ``2^-e W`` scaled back by ``4^e``, with ``max|W| = f 2^e``, f in [1/2, 1) (module
    docstring: the power-of-two scaling is exact, so only the Gram's over- or underflow is removed)."""
    amax = float(matrices.detach().abs().amax())
    if amax == 0.0 or not math.isfinite(amax):
        return _gram_eigenvalues(matrices, dtype, device)           # nothing to rescale: zeros (or NaN/Inf input)
    e = math.frexp(amax)[1]
    with np.errstate(over="ignore", under="ignore"):
        values = np.ldexp(_gram_eigenvalues(matrices * 2.0 ** -e, dtype, device), 2 * e)
    f64 = np.finfo(np.float64)
    if not f64.tiny / f64.eps <= values[-1] < np.inf:
        raise HmuDiagError(f"the eigenvalues lie outside the float64 range (largest |w| = {amax:.3g}): rescale the "
                           "weights")
    return values


def dtype_name(dtype: torch.dtype) -> str:
    """"float64" / "float32" for a torch dtype (the name reported in the ``dtype`` column)."""
    return str(dtype).removeprefix("torch.")
