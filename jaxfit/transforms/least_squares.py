"""Gauss-Newton and Levenberg-Marquardt as Optax-protocol transformations.

Both are built with the residual function ``residual_fn(params, batch)`` and
read the data from the ``batch`` keyword the chain passes to ``update`` (the
same keyword a line search's ``value_fn(params, batch=...)`` consumes); other
extra arguments (``value``, ``grad``, ``value_fn``) are ignored. The incoming
``updates`` (usually a gradient) are ignored too: the step comes from the
residuals. Params may be any pytree; they are flattened internally with
``ravel_pytree``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jaxfit import _checks
from jaxfit import residuals as _res


class ScaleByGaussNewtonState(NamedTuple):
    """Gauss-Newton's state: iteration count and diagnostics at the last base.

    ``cost`` and ``grad_norm`` (the infinity norm of ``J^T r``) are those at
    the params passed to the last ``update``.
    """

    count: jax.Array
    cost: jax.Array
    grad_norm: jax.Array


class ScaleByLevenbergMarquardtState(NamedTuple):
    """Levenberg-Marquardt's state (all leaves of fixed dtype and shape).

    Attributes:
      count: int32 number of updates.
      nfev: int32 residual evaluations (the start point and every trial).
      njev: int32 Jacobian evaluations.
      damping: the damping ``lambda`` (relative to ``scale``).
      nu: Nielsen's growth factor for rejected steps.
      scale: the diagonal ``D`` (running maximum of ``diag(J^T J)`` of the
        residuals' Jacobian, before any robust reweighting).
      cost: the cost at the params the last update returned.
      grad_norm: infinity norm of ``J^T r`` at the last base point.
      actual_reduction, predicted_reduction, ratio: of the last trial step.
      step_norm: Euclidean norm of the last trial step.
      accepted: whether the last trial step was taken.
      base: the flat params where ``hessian``/``gradient`` were computed.
      hessian, gradient: ``J^T J`` and ``J^T r`` at ``base``, reused after a
        rejected step (a rejection then costs one residual evaluation).
      valid: whether the cache holds anything yet.
    """

    count: jax.Array
    nfev: jax.Array
    njev: jax.Array
    damping: jax.Array
    nu: jax.Array
    scale: jax.Array
    cost: jax.Array
    grad_norm: jax.Array
    actual_reduction: jax.Array
    predicted_reduction: jax.Array
    ratio: jax.Array
    step_norm: jax.Array
    accepted: jax.Array
    base: jax.Array
    hessian: jax.Array
    gradient: jax.Array
    valid: jax.Array


def _checked_options(loss, f_scale, jacobian_mode, jac, chunk_rows=None):
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


def _flat_problem(residual_fn, params, batch):
    flat, unravel = ravel_pytree(params)
    return flat, unravel, _flat_fn(residual_fn, unravel, batch)


def _flat_fn(residual_fn, unravel, batch):
    return lambda x: jnp.ravel(residual_fn(unravel(x), batch)).astype(x.dtype)


def _row_blocks(batch, chunk_rows):
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
    blocks = _row_blocks(batch, chunk_rows)
    first = jax.tree.map(lambda a: a[0], blocks)
    zero = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, first)
    )
    add = lambda acc, block: (jax.tree.map(jnp.add, acc, fn(block)), None)
    return jax.lax.scan(add, zero, blocks)[0]


def _mode_for(flat, r_shape_fn, jacobian_mode, jac, chunked=False):
    if jac is not None:
        return "user"
    if jacobian_mode != "auto":
        return jacobian_mode
    m = jax.eval_shape(r_shape_fn, flat).shape[0]
    mode = _res.jacobian_mode(flat.size, m, "auto", flat.dtype.itemsize)
    # A block's dense Jacobian is small by construction.
    return "reverse" if chunked and mode == "matrix_free" else mode


def _dense_normal_equations(residual_fn, params, batch, opts, chunk_rows):
    """``(cost, J^T J, J^T r, column_norms2)`` summed over row blocks of
    ``batch`` (see :func:`_normal_equations`)."""
    jacobian_mode, jac, loss, f_scale = opts
    flat, unravel = ravel_pytree(params)
    first = (
        batch
        if chunk_rows is None
        else jax.tree.map(lambda a: a[0], _row_blocks(batch, chunk_rows))
    )
    mode = _mode_for(
        flat,
        _flat_fn(residual_fn, unravel, first),
        jacobian_mode,
        jac,
        chunked=chunk_rows is not None,
    )

    def block(b):
        fn = _flat_fn(residual_fn, unravel, b)
        return _normal_equations(fn, flat, mode, jac, unravel, b, loss, f_scale)

    return blockwise_sum(block, batch, chunk_rows)


def _cost_at(residual_fn, unravel, flat, batch, loss, f_scale, chunk_rows):
    cost = lambda b: _res.robust_cost(
        _flat_fn(residual_fn, unravel, b)(flat), loss, f_scale
    )
    return blockwise_sum(cost, batch, chunk_rows)


def _normal_equations(flat_fn, flat, mode, jac, unravel, batch, loss, f_scale):
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


# Up to this many params the SPD solve is an unrolled Cholesky. Its size
# grows as n^3: at n = 8 it added ~0.9 s to XLA's compile of a curve_fit,
# while LAPACK's per-matrix calls under vmap cost ~15% of a batched fit.
_UNROLLED_SOLVE_N = 4


def _spd_solve(A, b):
    """Solves ``A x = b`` for a symmetric positive definite ``A``.

    For small ``n`` an unrolled Cholesky: a few dozen scalar operations that
    vmap turns into elementwise ones over the batch, instead of one LAPACK
    call per matrix (LM's damped ``J^T J`` is SPD; if rounding makes it not,
    the step is NaN and LM rejects it and raises the damping).
    """
    n = b.shape[0]
    if n > _UNROLLED_SOLVE_N:
        return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A), b)
    L = [[None] * n for _ in range(n)]
    for j in range(n):
        d = A[j, j] - sum(L[j][k] * L[j][k] for k in range(j))
        L[j][j] = jnp.sqrt(d)
        for i in range(j + 1, n):
            L[i][j] = (A[i, j] - sum(L[i][k] * L[j][k] for k in range(j))) / L[j][j]
    y = [None] * n
    for i in range(n):
        y[i] = (b[i] - sum(L[i][k] * y[k] for k in range(i))) / L[i][i]
    x = [None] * n
    for i in reversed(range(n)):
        x[i] = (y[i] - sum(L[k][i] * x[k] for k in range(i + 1, n))) / L[i][i]
    return jnp.stack(x)


def marquardt_scale(scale: jax.Array, column_norms2: jax.Array) -> jax.Array:
    """Marquardt's diagonal ``D``: the running maximum of ``diag(J^T J)``.

    ``column_norms2`` is that diagonal for the residuals' own Jacobian, not
    the robustly reweighted one: a robust loss scales each row by
    ``sqrt(max(rho' + 2 rho'' z, eps))``, which is ``sqrt(eps)`` for every
    residual beyond ``f_scale`` under ``cauchy`` or ``arctan``. Started far
    from the optimum, all rows can be such outliers; a ``D`` ~1e-15 then
    made the damping grow by ~1e16 before the first step was accepted, and
    once inliers brought ``D`` back to O(1) that damping froze the fit.
    A zero column (a parameter the residuals ignore) keeps unit scale.
    """
    scale = jnp.maximum(scale, column_norms2)
    return jnp.where(scale > 0, scale, 1.0)


def damped_step(hessian, gradient, damping, scale) -> jax.Array:
    """The Levenberg-Marquardt step: solves ``(J^T J + lambda D) d = -J^T r``."""
    return _spd_solve(hessian + jnp.diag(damping * scale), -gradient)


def gauss_newton_step(hessian, gradient) -> jax.Array:
    """The minimum-norm Gauss-Newton step ``-(J^T J)^+ J^T r``."""
    return -jnp.linalg.pinv(hessian, hermitian=True) @ gradient


def break_ties(step: jax.Array, hessian: jax.Array) -> jax.Array:
    """``step`` plus a tiny move that separates parameters with tied columns.

    A model with interchangeable terms (``a e^{-bx} + c e^{-dx}`` from
    ``a = c``, ``b = d``) has identical Jacobian columns on its symmetric
    subspace, and ``J^T r`` is symmetric there too, so every exact step (LM,
    Gauss-Newton) keeps the symmetry: the fit ends at a saddle, the optimum
    of a model with one term fewer. SciPy escapes only through the rounding
    of its finite differences. Here, where two columns of ``J`` are parallel
    to within rounding (``|cos| >= 1 - 16 eps`` from ``hessian = J^T J``),
    the step gets a move of relative size ``sqrt(eps)`` inside the null space
    of ``J`` that separates every tied column: ``J`` times the move is zero,
    so the linear model, and the step's predicted reduction, are unchanged
    to first order, while LM's own dynamics amplify the asymmetry once the
    columns differ. The move is deterministic (index-dependent weights) and
    zero for a zero ``step`` (a stationary point). Without ties ``step`` is
    returned as is (bit for bit).

    Args:
      step: the step ``d`` for the flat params.
      hessian: ``J^T J`` (possibly robustly reweighted) at the same point.

    Returns:
      ``d`` plus the move (``d`` itself where no columns are tied).

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> J = jnp.array([[1.0, 1.0, 0.0], [2.0, 2.0, 1.0]])  # columns 0, 1 tied
      >>> step = jaxfit.transforms.least_squares.break_ties(
      ...     jnp.array([1.0, 1.0, 1.0]), J.T @ J)
      >>> bool(step[0] != step[1]), float(step[2]), float((J @ step)[0])
      (True, 1.0, 2.0)
    """
    n = step.shape[0]
    eps = jnp.finfo(hessian.dtype).eps
    # A strided diagonal and sums, not jnp.diag and a matvec: fewer kernels
    # in the LM loop body (XLA compile time of a first curve_fit).
    norm = jnp.sqrt(hessian.reshape(-1)[:: n + 1])
    norm = jnp.where(norm > 0, norm, 1.0)  # a zero column ties with nothing
    cos = hessian / (norm[:, None] * norm[None, :])
    sign = jnp.where(jnp.abs(cos) >= 1 - 16 * eps, jnp.sign(cos), 0.0)
    count = jnp.sum(jnp.abs(sign), axis=1)  # a live column ties with itself
    tied = count > 1
    # Distinct weights minus their signed mean over each group of tied
    # columns, in units where every column has norm 1: J @ move = 0.
    w = jnp.arange(n, dtype=hessian.dtype)
    move = jnp.where(tied, w - jnp.sum(sign * w, axis=1) / jnp.maximum(count, 1), 0)
    # Tied, some |move| >= 1/2; the largest becomes sqrt(eps) of the step.
    size = jnp.sqrt(eps) * jnp.max(jnp.abs(norm * step))
    size = size / jnp.maximum(jnp.max(jnp.abs(move)), 0.5)
    return jnp.where(tied, step + (size * move / norm).astype(step.dtype), step)


def step_too_large(step: jax.Array, x: jax.Array) -> jax.Array:
    """Whether a trial step moves some parameter by over ~10x its size.

    True where ``|d_i| > 10 (|x_i| + ||x||_inf)`` for some ``i`` (never at
    ``x = 0``: there is no size to compare with). LM rejects such a step and
    raises the damping, as for a step that fails to reduce the cost. A
    nearly undamped first step can otherwise throw a parameter orders of
    magnitude away, onto a plateau where the model no longer depends on it
    (NIST BoxBOD from ``(1, 1)``: ``b2`` to ~100, where ``exp(-b2 x) ~ 0``),
    and the fit stalls there although the step reduced the cost. The
    ``||x||_inf`` term lets a parameter started at zero move as far as the
    largest parameter's size, so fits from such starts keep their steps.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> too_large = jaxfit.transforms.least_squares.step_too_large
      >>> x = jnp.array([1.0, 1.0])
      >>> bool(too_large(jnp.array([0.0, 103.0]), x)), bool(too_large(-x, x))
      (True, False)
    """
    size = jnp.abs(x) + jnp.max(jnp.abs(x), initial=0.0)
    return jnp.any((jnp.abs(step) > 10 * size) & (size > 0))


def gain_ratio(cost, new_cost, step, gradient, damping, scale):
    """``(actual, predicted, ratio)`` cost reductions of a damped step.

    ``ratio`` is ``-inf`` where the model predicts no reduction or the new
    cost is not finite, so such a step is always rejected.
    """
    actual = cost - new_cost
    predicted = 0.5 * jnp.dot(step, damping * scale * step - gradient)
    ratio = jnp.where(predicted > 0, actual / predicted, -jnp.inf)
    ratio = jnp.where(jnp.isfinite(new_cost), ratio, -jnp.inf)
    return actual, predicted, ratio


def nielsen_update(ratio, damping, nu):
    """Nielsen's (1999) damping update: ``(accepted, damping, nu)``.

    An accepted step (``ratio > 0``) shrinks ``lambda`` by
    ``max(1/3, 1 - (2 rho - 1)**3)`` and resets ``nu`` to 2; a rejected one
    multiplies ``lambda`` by ``nu`` and doubles ``nu``.
    """
    accepted = ratio > 0
    shrink = jnp.maximum(1 / 3, 1 - (2 * ratio - 1) ** 3)
    new_damping = jnp.where(accepted, damping * shrink, damping * nu)
    # Capped so that endless rejections at a minimum never make inf * 0.
    new_damping = jnp.minimum(new_damping, 1e30)
    new_nu = jnp.where(accepted, 2.0, 2 * nu)
    return accepted, new_damping, new_nu


def _matrix_free(flat_fn, flat, loss, f_scale):
    """``(cost, v -> J^T J v, J^T r)`` without forming ``J``."""
    r, jvp_fn, vjp_fn = _res.normal_matvec(flat_fn, flat)
    cost = _res.robust_cost(r, loss, f_scale)
    r_s, row = _res.robust_scaling(r, loss, f_scale)
    return cost, lambda v: vjp_fn(row**2 * jvp_fn(v)), vjp_fn(row * r_s)


def scale_by_gauss_newton(
    residual_fn: Callable[[Any, Any], jax.Array],
    *,
    loss: str = "linear",
    f_scale: float = 1.0,
    jacobian_mode: str = "auto",
    jac: Callable | None = None,
    chunk_rows: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Replaces the updates by the Gauss-Newton step ``d``.

    ``d`` solves ``(J^T J) d = -J^T r`` at ``params`` (pseudo-inverse, so a
    rank-deficient ``J`` gives the minimum-norm step; where columns of ``J``
    are tied, :func:`break_ties` adds a tiny move that separates them). With
    a robust ``loss`` the residuals and Jacobian are reweighted as in SciPy.
    Chain it with a line search (its ``value_fn`` the
    :func:`jaxfit.residual_loss` of the same residuals) for a damped
    Gauss-Newton method.

    Args:
      residual_fn: ``(params, batch) -> r``, a 1-D residual vector.
      loss: robust loss, one of ``jaxfit.residuals.LOSSES``.
      f_scale: robust loss scale; > 0.
      jacobian_mode: ``auto``, ``forward``, ``reverse`` or ``matrix_free``
        (conjugate gradients on ``J^T J v``); see :func:`jaxfit.jacobian_mode`.
      jac: optional ``jac(params, batch) -> J``, the ``m x n`` Jacobian with
        respect to the flattened params.
      chunk_rows: if set, ``J^T J``, ``J^T r`` and the cost are summed over
        blocks of this many rows of ``batch`` (every leaf's leading axis,
        which it must divide) in a ``lax.scan``: memory for one block's
        Jacobian instead of all ``m`` rows. Only for residuals whose row
        ``i`` depends on batch row ``i`` alone (pointwise models).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs
      ``params`` and reads ``batch=``.

    Raises:
      ValueError: unknown ``loss`` or ``jacobian_mode``, non-positive
        ``f_scale``, or a non-callable ``jac``.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> res = lambda p, batch: p['a'] * batch - 2.0 * batch
      >>> tx = jaxfit.scale_by_gauss_newton(res)
      >>> params = {'a': jnp.array(0.0)}
      >>> updates, _ = tx.update(params, tx.init(params), params, batch=jnp.ones(3))
      >>> updates['a']
      Array(2., dtype=float32)
    """
    _checked_options(loss, f_scale, jacobian_mode, jac, chunk_rows)
    opts = (jacobian_mode, jac, loss, f_scale)

    def init_fn(params):
        _checks.params(params)
        flat, _ = ravel_pytree(params)
        zero = jnp.zeros([], flat.dtype)
        return ScaleByGaussNewtonState(_checks.count(), zero, zero)

    def update_fn(updates, state, params=None, *, batch=None, **extra_args):
        del updates, extra_args
        if params is None:
            raise ValueError("scale_by_gauss_newton needs `params` in update")
        flat, unravel, flat_fn = _flat_problem(residual_fn, params, batch)
        mode = "dense" if chunk_rows else _mode_for(flat, flat_fn, jacobian_mode, jac)
        if mode == "matrix_free":
            cost, matvec, g = _matrix_free(flat_fn, flat, loss, f_scale)
            step, _ = jax.scipy.sparse.linalg.cg(matvec, -g, maxiter=4 * flat.size)
        else:
            cost, A, g, _ = _dense_normal_equations(
                residual_fn, params, batch, opts, chunk_rows
            )
            step = break_ties(gauss_newton_step(A, g), A)
        new_state = ScaleByGaussNewtonState(
            count=optax.safe_increment(state.count),
            cost=cost.astype(flat.dtype),
            grad_norm=jnp.max(jnp.abs(g)).astype(flat.dtype),
        )
        return unravel(step.astype(flat.dtype)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_levenberg_marquardt(
    residual_fn: Callable[[Any, Any], jax.Array],
    *,
    init_damping: float = 1e-3,
    loss: str = "linear",
    f_scale: float = 1.0,
    jacobian_mode: str = "auto",
    jac: Callable | None = None,
    chunk_rows: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Replaces the updates by a Levenberg-Marquardt step, or by zeros.

    Each update solves ``(J^T J + lambda D) d = -J^T r`` with Marquardt's
    scaling ``D`` (the running maximum of ``diag(J^T J)``, which makes the
    method invariant to the units of each parameter), evaluates the residuals
    once at ``params + d`` and forms the gain ratio ``rho`` of actual to
    predicted cost reduction. A step with ``rho > 0`` is returned and
    ``lambda`` shrinks by ``max(1/3, 1 - (2 rho - 1)**3)`` (Nielsen, 1999);
    otherwise the update is zero and ``lambda`` grows by ``nu``, which doubles
    on each consecutive rejection. After a rejection the next update at the
    same params reuses ``J^T J`` and ``J^T r`` from the state, so it costs one
    residual evaluation. Where columns of ``J`` are tied (interchangeable
    terms at a symmetric point, such as SciPy's all-ones start) the step gets
    the tiny null-space move of :func:`break_ties`, so the fit leaves the
    symmetric saddle. In ``matrix_free`` mode ``D`` is the identity, the
    system is solved by conjugate gradients and ties are not detected.

    Args:
      residual_fn: ``(params, batch) -> r``, a 1-D residual vector.
      init_damping: the initial ``lambda``; > 0.
      loss, f_scale, jacobian_mode, jac, chunk_rows: as in
        :func:`scale_by_gauss_newton`.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with a
      ``ScaleByLevenbergMarquardtState``; ``update`` needs ``params`` and
      reads ``batch=``.

    Raises:
      ValueError: as :func:`scale_by_gauss_newton`, or ``init_damping <= 0``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxfit
      >>> x = jnp.linspace(0.0, 1.0, 20)
      >>> res = lambda p, batch: p['a'] * jnp.exp(p['k'] * batch[0]) - batch[1]
      >>> tx = jaxfit.scale_by_levenberg_marquardt(res)
      >>> params = {'a': jnp.array(1.0), 'k': jnp.array(0.0)}
      >>> state = tx.init(params)
      >>> batch = (x, 2.0 * jnp.exp(-1.5 * x))
      >>> update = jax.jit(tx.update)
      >>> for _ in range(30):
      ...     updates, state = update(params, state, params, batch=batch)
      ...     params = jaxfit.apply_updates(params, updates)
      >>> round(float(params['a']), 4), round(float(params['k']), 4)
      (2.0, -1.5)
    """
    _checked_options(loss, f_scale, jacobian_mode, jac, chunk_rows)
    opts = (jacobian_mode, jac, loss, f_scale)
    _checks.positive("init_damping", init_damping)

    def init_fn(params):
        _checks.params(params)
        flat, _ = ravel_pytree(params)
        dtype = flat.dtype
        n = flat.size
        # Matrix-free mode keeps no n x n cache (n may be huge there).
        k = 0 if jacobian_mode == "matrix_free" else n
        zero = jnp.zeros([], dtype)
        return ScaleByLevenbergMarquardtState(
            count=_checks.count(),
            nfev=_checks.count(),
            njev=_checks.count(),
            damping=jnp.asarray(init_damping, dtype),
            nu=jnp.asarray(2.0, dtype),
            scale=jnp.zeros([n], dtype),
            cost=zero,
            grad_norm=zero,
            actual_reduction=zero,
            predicted_reduction=zero,
            ratio=zero,
            step_norm=zero,
            accepted=jnp.zeros([], bool),
            base=jnp.zeros([k], dtype),
            hessian=jnp.zeros([k, k], dtype),
            gradient=jnp.zeros([k], dtype),
            valid=jnp.zeros([], bool),
        )

    def update_fn(updates, state, params=None, *, batch=None, **extra_args):
        del updates, extra_args
        if params is None:
            raise ValueError("scale_by_levenberg_marquardt needs `params` in update")
        flat, unravel, flat_fn = _flat_problem(residual_fn, params, batch)
        dtype = flat.dtype
        mode = "dense" if chunk_rows else _mode_for(flat, flat_fn, jacobian_mode, jac)
        if mode == "matrix_free":
            cost, normal_matvec, g = _matrix_free(flat_fn, flat, loss, f_scale)
            scale = jnp.ones_like(flat)
            fresh = jnp.ones([], bool)
        else:
            reuse = state.valid & jnp.all(flat == state.base)

            def compute(_):
                return _dense_normal_equations(
                    residual_fn, params, batch, opts, chunk_rows
                )

            # The scale already holds the cached point's column norms.
            cached = lambda _: (state.cost, state.hessian, state.gradient, state.scale)
            cost, A, g, column_norms2 = jax.lax.cond(reuse, cached, compute, None)
            cost = cost.astype(dtype)
            fresh = ~reuse
            scale = marquardt_scale(state.scale, column_norms2)
            normal_matvec = lambda v: A @ v
        damping = state.damping

        if mode == "matrix_free":
            damped = lambda v: normal_matvec(v) + damping * scale * v
            step, _ = jax.scipy.sparse.linalg.cg(damped, -g, maxiter=4 * flat.size)
        else:
            step = break_ties(damped_step(A, g, damping, scale), A)
        step = step.astype(dtype)
        new_cost = _cost_at(
            residual_fn, unravel, flat + step, batch, loss, f_scale, chunk_rows
        ).astype(dtype)
        actual, predicted, ratio = gain_ratio(cost, new_cost, step, g, damping, scale)
        ratio = jnp.where(step_too_large(step, flat), -jnp.inf, ratio)
        accepted, new_damping, new_nu = nielsen_update(ratio, damping, state.nu)
        new_nu = new_nu.astype(dtype)
        # A first call counts the residual evaluated with the Jacobian.
        nfev = state.nfev + 1 + jnp.where(state.valid, 0, 1).astype(jnp.int32)
        new_state = ScaleByLevenbergMarquardtState(
            count=optax.safe_increment(state.count),
            nfev=nfev,
            njev=state.njev + fresh.astype(jnp.int32),
            damping=new_damping.astype(dtype),
            nu=new_nu,
            scale=scale.astype(dtype),
            cost=jnp.where(accepted, new_cost, cost),
            grad_norm=jnp.max(jnp.abs(g)).astype(dtype),
            actual_reduction=actual,
            predicted_reduction=predicted.astype(dtype),
            ratio=ratio.astype(dtype),
            step_norm=jnp.linalg.norm(step).astype(dtype),
            accepted=accepted,
            base=flat if mode != "matrix_free" else state.base,
            hessian=A if mode != "matrix_free" else state.hessian,
            gradient=g.astype(dtype) if mode != "matrix_free" else state.gradient,
            valid=jnp.ones([], bool),
        )
        return unravel(jnp.where(accepted, step, 0)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
