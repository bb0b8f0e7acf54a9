"""Readable reports: one self-contained HTML page with embedded figures, plus CSV tables.

    write_report(layers_or_rank_result, outdir, *, title, spectra=None, source=None) -> Path
"""
from .html import plain_summary, render_html, write_report

__all__ = ["write_report", "render_html", "plain_summary"]
