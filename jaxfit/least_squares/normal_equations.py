"""The normal equations of a residual function, in every form the drivers use.

``(cost, J^T J, J^T r, column_norms2)`` from a dense Jacobian (forward or
reverse mode, or the user's ``jac``), summed over row blocks
(``chunk_rows``) so no ``m x n`` Jacobian is ever alive, or matrix-free
(``v -> J^T J v`` by a JVP and a VJP). Residuals are reweighted for a robust
loss as SciPy's ``least_squares`` does. Params are flattened with
``ravel_pytree``: every driver works on one flat vector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxfit import _checks
from jaxfit import residuals as _res


def check_options(loss, f_scale, jacobian_mode, jac, chunk_rows=None):
    _res._check_loss(loss)
    if chunk_rows is not None:
        _checks.positive_int("chunk_rows", chunk_rows)
        if jacobian_mode == "matrix_free":
            raise ValueError("`chunk_rows` needs a dense Jacobian, not matrix_free")
    _checks.positive("f_scale", f_scale)
    if jacobian_mode not in _res.JACOBIAN_MODES:
        raise ValueError(
            f"`jacobian_mode` must be one of {_res.JACOBIAN_MODES!r}, "
            f"got {jacobian_mode!r}"
        )
    if jac is not None and not callable(jac):
        raise ValueError(f"`jac` must be None or callable, got {jac!r}")
    if jac is not None and jacobian_mode == "matrix_free":
        raise ValueError("`jac` (a dense Jacobian) cannot be used with matrix_free")


def flat_problem(residual_fn, params, batch):
    flat, unravel = ravel_pytree(params)
    return flat, unravel, flat_fn(residual_fn, unravel, batch)


def flat_fn(residual_fn, unravel, batch):
    return lambda x: jnp.ravel(residual_fn(unravel(x), batch)).astype(x.dtype)


def row_blocks(batch, chunk_rows):
    """``batch`` with every leaf's leading axis split into blocks of rows."""

    def split(a):
        a = jnp.asarray(a)
        if a.ndim == 0 or a.shape[0] % chunk_rows:
            raise ValueError(
                f"`chunk_rows`={chunk_rows} must divide the leading axis of every "
                f"batch leaf, got a leaf of shape {a.shape}"
            )
        return a.reshape(a.shape[0] // chunk_rows, chunk_rows, *a.shape[1:])

    return jax.tree.map(split, batch)


def blockwise_sum(fn: Callable, batch: Any, chunk_rows: int | None) -> Any:
    """``fn(batch)``, or with ``chunk_rows`` the sum of ``fn`` over row blocks.

    The blocks run in a ``lax.scan``, so only one block's intermediates
    (e.g. its ``chunk_rows x n`` Jacobian) are alive at a time. Valid when
    ``fn`` is a sum over rows, each depending only on the same batch row.
    """
    if chunk_rows is None:
        return fn(batch)
    blocks = row_blocks(batch, chunk_rows)
    first = jax.tree.map(lambda a: a[0], blocks)
    zero = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, first)
    )
    add = lambda acc, block: (jax.tree.map(jnp.add, acc, fn(block)), None)
    return jax.lax.scan(add, zero, blocks)[0]


def mode_for(flat, r_shape_fn, jacobian_mode, jac, chunked=False):
    if jac is not None:
        return "user"
    if jacobian_mode != "auto":
        return jacobian_mode
    m = jax.eval_shape(r_shape_fn, flat).shape[0]
    mode = _res.jacobian_mode(flat.size, m, "auto", flat.dtype.itemsize)
    # A block's dense Jacobian is small by construction.
    return "reverse" if chunked and mode == "matrix_free" else mode


def dense_normal_equations(residual_fn, params, batch, opts, chunk_rows):
    """``(cost, J^T J, J^T r, column_norms2)`` summed over row blocks of
    ``batch`` (see :func:`normal_equations`)."""
    jacobian_mode, jac, loss, f_scale = opts
    flat, unravel = ravel_pytree(params)
    first = (
        batch
        if chunk_rows is None
        else jax.tree.map(lambda a: a[0], row_blocks(batch, chunk_rows))
    )
    mode = mode_for(
        flat,
        flat_fn(residual_fn, unravel, first),
        jacobian_mode,
        jac,
        chunked=chunk_rows is not None,
    )

    def block(b):
        fn = flat_fn(residual_fn, unravel, b)
        return normal_equations(fn, flat, mode, jac, unravel, b, loss, f_scale)

    return blockwise_sum(block, batch, chunk_rows)


def cost_at(residual_fn, unravel, flat, batch, loss, f_scale, chunk_rows):
    cost = lambda b: _res.robust_cost(
        flat_fn(residual_fn, unravel, b)(flat), loss, f_scale
    )
    return blockwise_sum(cost, batch, chunk_rows)


def normal_equations(flat_fn, flat, mode, jac, unravel, batch, loss, f_scale):
    """``(cost, J^T J, J^T r, column_norms2)`` of the (robustly reweighted)
    residuals; ``column_norms2`` is ``diag(J^T J)`` of the residuals' own
    Jacobian, before the robust reweighting (Marquardt's scale: see
    :func:`marquardt_scale`)."""
    if mode == "user":
        r = flat_fn(flat)
        J = jnp.asarray(jac(unravel(flat), batch), flat.dtype).reshape(r.size, -1)
    else:
        r, J = _res.residual_and_jacobian(flat_fn, flat, mode)
    # Materialise r and J once: otherwise XLA refuses the model into each of
    # the n(n+1)/2 + n reductions below (under vmap, 1.4x slower per step).
    r, J = jax.lax.optimization_barrier((r, J))
    cost = _res.robust_cost(r, loss, f_scale)
    if loss == "linear":  # the rows of a linear loss are all ones
        A, g = _gram(J, r)
        return cost, A, g, jnp.diag(A)
    column_norms2 = jnp.sum(J * J, axis=0)
    r, row = _res.robust_scaling(r, loss, f_scale)
    return cost, *_gram(J * row[:, None], r), column_norms2


# Up to this many params, J^T J is n(n+1)/2 column products summed (reductions
# XLA fuses with the Jacobian's producer: ~2x faster than a tall-skinny matmul
# at 1e6 points, and elementwise under vmap instead of many tiny matmuls).
_SMALL_N = 8


def _gram(J, r):
    """``(J^T J, J^T r)``."""
    n = J.shape[1]
    if n > _SMALL_N:
        return J.T @ J, J.T @ r
    cols = [J[:, i] for i in range(n)]
    rows = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            rows[i][j] = rows[j][i] = jnp.sum(cols[i] * cols[j])
    A = jnp.stack([jnp.stack(row) for row in rows])
    return A, jnp.stack([jnp.sum(c * r) for c in cols])


def matrix_free(flat_fn, flat, loss, f_scale):
    """``(cost, v -> J^T J v, J^T r)`` without forming ``J``."""
    r, jvp_fn, vjp_fn = _res.normal_matvec(flat_fn, flat)
    cost = _res.robust_cost(r, loss, f_scale)
    r_s, row = _res.robust_scaling(r, loss, f_scale)
    return cost, lambda v: vjp_fn(row**2 * jvp_fn(v)), vjp_fn(row * r_s)
