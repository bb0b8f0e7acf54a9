"""Likelihood-ratio tests: the fitted power-law tail against alternative tails (CSN sec. 5, Vuong 1989).

Every alternative is fitted by maximum likelihood to the same tail x >= x_min, conditioned on x >= x_min:

    exponential            p(x) = lam exp(-lam (x - x_min))                         (closed-form MLE)
    stretched_exponential  p(x) = beta lam x^(beta-1) exp(-lam (x^beta - x_min^beta))
    lognormal              p(x) = phi((ln x - mu)/s) / (x s Q((ln x_min - mu)/s)),  Q = normal survival
    truncated_power_law    p(x) = x^-alpha exp(-lam x) / (x_min^(1-alpha) E_alpha(lam x_min)),
                           E_p(z) = int_1^inf t^-p e^(-z t) dt  (power law with exponential cut-off)

R = sum_i [ln p_PL(x_i) - ln p_alt(x_i)] (R > 0 favours the power law).  Non-nested alternatives (the first
three): Vuong's test, p = erfc(|R| / sqrt(2 n s^2)) with s^2 the variance of the pointwise differences, and
normalised ratio R / sqrt(n s^2).  The truncated power law nests the power law (lam = 0): Wilks' test,
p = P(chi2_1 > 2|R|).  Unlike powerlaw 2.0.0's ``distribution_compare``, ``nested`` is decided by the pair of
models only (powerlaw's ``A or B and C`` precedence ignores an explicit nested=False).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.integrate
import scipy.optimize
import scipy.special
import scipy.stats

ALTERNATIVES = ("exponential", "stretched_exponential", "lognormal", "truncated_power_law")


@dataclass(frozen=True)
class LikelihoodRatio:
    """Power law vs ``alternative`` on the same tail.  ``favours`` is decided at ``p_value < level``."""

    alternative: str
    R: float
    p_value: float
    normalized_R: float
    nested: bool
    n_tail: int
    params: dict
    favours: str


def _minimize(nll, x0, bounds):
    res = scipy.optimize.minimize(nll, x0, method="L-BFGS-B", bounds=bounds)
    res2 = scipy.optimize.minimize(nll, res.x, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12,
                                                                               "maxiter": 4000})
    return res2.x if res2.fun <= res.fun else res.x


def _exponential(x, xmin):
    lam = 1.0 / np.mean(x - xmin)
    return np.log(lam) - lam * (x - xmin), {"lambda": lam}


def _stretched_exponential(x, xmin):
    lx = np.log(x)

    def logpdf(p):
        beta, lam = np.exp(p)
        return np.log(beta * lam) + (beta - 1) * lx - lam * (x ** beta - xmin ** beta)

    def nll(p):
        v = -np.sum(logpdf(p))
        return v if np.isfinite(v) else 1e300

    p0 = np.log([1.0, 1.0 / np.mean(x - xmin + 1e-300)])
    p = _minimize(nll, p0, [(-10, 5), (-50, 50)])
    return logpdf(p), {"beta": float(np.exp(p[0])), "lambda": float(np.exp(p[1]))}


def _lognormal(x, xmin):
    lx = np.log(x)
    l0 = math.log(xmin)

    def logpdf(p):
        mu, s = p[0], math.exp(p[1])
        return (scipy.stats.norm.logpdf((lx - mu) / s) - lx - math.log(s)
                - scipy.stats.norm.logsf((l0 - mu) / s))

    def nll(p):
        v = -np.sum(logpdf(p))
        return v if np.isfinite(v) else 1e300

    p0 = np.array([np.mean(lx), math.log(max(np.std(lx), 1e-3))])
    p = _minimize(nll, p0, [(None, None), (-10, 5)])
    return logpdf(p), {"mu": float(p[0]), "sigma": float(math.exp(p[1]))}


def _log_en(p: float, z: float) -> float:
    """ln E_p(z) = ln int_1^inf t^-p exp(-z t) dt (z > 0), by quadrature of the scaled integrand."""
    val, _ = scipy.integrate.quad(lambda u: math.exp(-z * u) * (1.0 + u) ** -p, 0.0, np.inf, epsabs=0,
                                  epsrel=1e-12, limit=200)
    return -z + math.log(val)


def _truncated_power_law(x, xmin, alpha0):
    lx = np.log(x)
    k = x.size

    def logpdf(p):
        a, lam = p[0], math.exp(p[1])
        return -a * lx - lam * x - ((1 - a) * math.log(xmin) + _log_en(a, lam * xmin))

    def nll(p):
        v = -np.sum(logpdf(p))
        return v if np.isfinite(v) else 1e300

    p0 = np.array([alpha0, math.log(1e-3 / np.mean(x))])
    p = _minimize(nll, p0, [(-5, 50), (math.log(1e-12 / xmin), math.log(1e3 / xmin))])
    ll = logpdf(p)
    return ll, {"alpha": float(p[0]), "lambda": float(math.exp(p[1])), "k": k}


def compare_tail(tail: np.ndarray, xmin: float, alpha: float, alternative: str, level: float = 0.1) -> LikelihoodRatio:
    """Likelihood-ratio test of the power law (alpha, xmin) against ``alternative`` on ``tail`` (all >= xmin)."""
    x = np.asarray(tail, dtype=np.float64)
    l_pl = math.log(alpha - 1.0) - math.log(xmin) - alpha * np.log(x / xmin)
    if alternative == "exponential":
        l_alt, params = _exponential(x, xmin)
    elif alternative == "stretched_exponential":
        l_alt, params = _stretched_exponential(x, xmin)
    elif alternative == "lognormal":
        l_alt, params = _lognormal(x, xmin)
    else:
        l_alt, params = _truncated_power_law(x, xmin, alpha)
        params.pop("k")
    d = l_pl - l_alt
    n = d.size
    R = float(np.sum(d))
    nested = alternative == "truncated_power_law"
    s2 = float(np.mean((d - d.mean()) ** 2))
    if nested:
        R = min(R, 0.0)      # the nesting model can only gain likelihood; a positive R is optimiser noise
        p = float(scipy.stats.chi2.sf(2.0 * abs(R), 1))
    else:
        p = float(scipy.special.erfc(abs(R) / math.sqrt(2.0 * n * s2))) if s2 > 0 else 1.0
    normalized = R / math.sqrt(n * s2) if s2 > 0 else 0.0
    favours = "neither" if p >= level else ("power_law" if R > 0 else alternative)
    return LikelihoodRatio(alternative=alternative, R=R, p_value=p, normalized_R=normalized, nested=nested,
                           n_tail=n, params=params, favours=favours)
