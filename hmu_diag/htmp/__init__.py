"""The high-temperature Marchenko-Pastur (HTMP) family, scipy.stats style.

Hodgkinson, Wang & Mahoney, "Models of Heavy-Tailed Mechanistic Universality", ICML 2025 (arXiv:2506.03470),
Eq. (E.5); research note /work/shared/research/htmp.md Sec. 2-3.  HTMP(gamma, kappa, scale) is the limiting
eigenvalue law of the beta-Laguerre (Wishart) ensemble at high temperature, Dyson index beta = kappa/N:

* ``gamma = M/N in (0, 1]`` aspect ratio (smaller over larger dimension), ``kappa > 0`` eigenvalue repulsion
  (``kappa = np.inf`` is Marchenko-Pastur), ``scale = sigma^2 = E[lambda]``.
* a = kappa/2, s = kappa/(2 gamma), delta = s - a = kappa (1-gamma)/(2 gamma), theta = s/scale, t = theta x.
* density   rho(x) = theta t^(delta-1) e^(-t) / [Gamma(1 + kappa/2) Gamma(s) |U(kappa/2, 1 - delta, -t)|^2], x > 0
  (U = Tricomi's confluent hypergeometric function; support (0, inf) for finite kappa);
* CDF       F(x) = (2/(pi kappa)) |arg U(kappa/2, 1 - delta, -t - i0) - arg U(..., 0)|;
* Stieltjes S(z) = E[1/(lambda + z)] = theta U(a + 1, 2 - delta, theta z) / U(a, 1 - delta, theta z), z > 0;
* moments   E[lambda] = scale, Var = gamma scale^2 (1 + 2/kappa),
  theta m_{k+1} = (k + delta) m_k + (kappa/2) sum_{i<=k} m_i m_{k-i};
* tails     rho(x) ~ C0 x^(delta-1) as x -> 0 (power law), Gamma-type e^(-theta x) decay as x -> inf;
* inverse orientation (mu = 1/lambda, used for NTK/CK/Hessian spectra): pdf_inv(mu) = pdf(1/mu)/mu^2,
  F_inv(mu) = 1 - F(1/mu), upper tail pdf_inv ~ C0 mu^(-(1 + delta)), i.e. HTSR alpha = 1 + delta.
  ``scale`` always refers to the underlying HTMP variable lambda (E[lambda] = scale), not to mu.
* kappa -> inf: Marchenko-Pastur with edges scale (1 -+ sqrt(gamma))^2 (``mp_pdf``, ``mp_cdf``, ...);
  for kappa >= ``KAPPA_MP`` (= 200, where sup|F_HTMP - F_MP| ~ 0.45/kappa = 2e-3) the MP closed forms are used.

Functions: pdf, logpdf, cdf, sf, stieltjes, moments, mean, var, sample, and the MP family mp_pdf, mp_logpdf,
mp_cdf, mp_sf, mp_edges, mp_moment, mp_sample.
"""
from hmu_diag.htmp.density import KAPPA_MP, cdf, logpdf, mean, moments, params, pdf, sf, stieltjes, var
from hmu_diag.htmp.mp import mp_cdf, mp_edges, mp_logpdf, mp_moment, mp_pdf, mp_sample, mp_sf
from hmu_diag.htmp.sampling import sample

__all__ = [
    "KAPPA_MP", "pdf", "logpdf", "cdf", "sf", "stieltjes", "moments", "mean", "var", "params", "sample",
    "mp_pdf", "mp_logpdf", "mp_cdf", "mp_sf", "mp_edges", "mp_moment", "mp_sample",
]


def __getattr__(name: str):  # lazy re-export of hmu_diag.fits.htmp's fit, fit_many, HTMPFit (eager: circular import)
    if name in ("fit", "fit_many", "HTMPFit"):
        from hmu_diag.fits import htmp as _fits_htmp
        return getattr(_fits_htmp, name)
    raise AttributeError(f"module 'hmu_diag.htmp' has no attribute {name!r}")
