"""Spectra of the matrices a model holds: weights (Gram eigenvalues), Jacobians and Hessians."""
