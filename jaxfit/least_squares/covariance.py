"""One covariance routine: ``(J^T J)^+`` with SciPy's cut-off, and SciPy's
``pcov`` scaling and warning.

``curve_fit`` has ``J`` (or the ``R`` of its QR) and reads the spectrum from
an SVD, as SciPy does; the streamed ``fit_least_squares`` has only the
accumulated ``J^T J`` and reads it from an eigendecomposition. Both end in
:func:`pseudo_inverse`, whose relative cut-off is SciPy's ``eps * max(m, n)``
on what each source can resolve: singular values of ``J``, or eigenvalues of
``J^T J`` (whose rounding is of that relative size, not its square).
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from jaxfit._scipy_compat import OptimizeWarning


def pseudo_inverse(values, vectors, cutoff):
    """``(V diag(1 / values) V^T, full rank)``, dropping ``values`` at most
    ``cutoff * max(values)``; ``values`` are eigenvalues of ``J^T J`` and
    ``vectors`` their eigenvectors (as columns)."""
    keep = values > cutoff * jnp.max(values)
    inv = jnp.where(keep, 1 / jnp.where(keep, values, 1.0), 0.0)
    return (vectors * inv) @ vectors.T, jnp.all(keep)


def covariance_from_r(R, m):
    """``(J^T J)^+`` from the ``n x n`` ``R`` of a QR of the ``m x n`` ``J``
    (the same singular values as ``J``), and whether ``J`` has full rank."""
    _, s, vt = jnp.linalg.svd(R, full_matrices=False)
    rtol = jnp.finfo(R.dtype).eps * jnp.maximum(m, R.shape[0])
    return pseudo_inverse(s * s, vt.T, rtol * rtol)


def covariance_from_normal(hessian, m):
    """``(J^T J)^+`` from ``J^T J`` itself, and whether ``J`` has full rank."""
    w, v = jnp.linalg.eigh(hessian)
    rtol = jnp.finfo(hessian.dtype).eps * jnp.maximum(m, hessian.shape[0])
    return pseudo_inverse(w, v, rtol)


def scipy_pcov(pcov, full_rank, cost, m, n, absolute_sigma, stacklevel=2):
    """``pcov`` scaled as SciPy's ``curve_fit`` (by the reduced chi-square
    ``2 cost / (m - n)`` unless ``absolute_sigma``), or ``inf`` with SciPy's
    ``OptimizeWarning`` where it cannot be estimated: ``J`` rank-deficient
    (``full_rank`` False; pass True to keep the pseudo-inverse, as SciPy's
    'trf' does), a NaN, or no degrees of freedom."""
    pcov = np.asarray(pcov)
    warn = not bool(full_rank) or np.isnan(pcov).any()
    if not warn and not absolute_sigma:
        if m > n:
            pcov = pcov * (2 * float(cost) / (m - n))
        else:
            warn = True
    if warn:
        warnings.warn(
            "Covariance of the parameters could not be estimated",
            OptimizeWarning,
            stacklevel=stacklevel + 1,
        )
        pcov = np.full((n, n), np.inf)
    return pcov
