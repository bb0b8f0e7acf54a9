"""hmu-diag: audit trained networks from the spectra of their matrices."""
__version__ = "0.1.0"
