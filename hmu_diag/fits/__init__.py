"""Fits of spectra: power law (CSN), Marchenko-Pastur and HTMP.  Pure numpy/scipy: arrays in, frozen dataclasses out."""
