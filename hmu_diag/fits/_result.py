"""What every fit result shares: a ``status`` ("ok" or "failed: <why>") and the one-line repr of a failed fit."""
from __future__ import annotations


class FitStatus:
    """Mixin for the frozen result dataclasses of the fits (:class:`~hmu_diag.fits.powerlaw.PowerLawFit`,
    :class:`~hmu_diag.fits.mp.MPFit`, :class:`~hmu_diag.fits.htmp.HTMPFit`), which define ``status``, ``n`` and
    ``n_dropped``."""

    status: str
    n: int
    n_dropped: int

    @property
    def ok(self) -> bool:
        """True when the fit succeeded (its numbers are valid)."""
        return self.status == "ok"

    def failed_repr(self) -> str:
        """``Name(status='failed: ...', n=..., n_dropped=...)``: the repr of a fit without numbers."""
        return f"{type(self).__name__}(status={self.status!r}, n={self.n}, n_dropped={self.n_dropped})"
