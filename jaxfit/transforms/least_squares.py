"""Gauss-Newton and Levenberg-Marquardt as Optax-protocol transformations.

Both are built with the residual function ``residual_fn(params, batch)`` and
read the data from the ``batch`` keyword the chain passes to ``update`` (the
same keyword a line search's ``value_fn(params, batch=...)`` consumes); other
extra arguments (``value``, ``grad``, ``value_fn``) are ignored. The incoming
``updates`` (usually a gradient) are ignored too: the step comes from the
residuals. Params may be any pytree; they are flattened internally with
``ravel_pytree``. The step rules and normal equations are the engine's
(:mod:`jaxfit.least_squares`); these are its Optax-protocol drivers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jaxfit import _checks
from jaxfit.least_squares import normal_equations as _ne
from jaxfit.least_squares import steps as _steps


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
    _ne.check_options(loss, f_scale, jacobian_mode, jac, chunk_rows)
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
        flat, unravel, flat_fn = _ne.flat_problem(residual_fn, params, batch)
        mode = (
            "dense" if chunk_rows else _ne.mode_for(flat, flat_fn, jacobian_mode, jac)
        )
        if mode == "matrix_free":
            cost, matvec, g = _ne.matrix_free(flat_fn, flat, loss, f_scale)
            step, _ = jax.scipy.sparse.linalg.cg(matvec, -g, maxiter=4 * flat.size)
        else:
            cost, A, g, _ = _ne.dense_normal_equations(
                residual_fn, params, batch, opts, chunk_rows
            )
            step = _steps.gn_proposal(A, g)
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
    return damped_least_squares(
        residual_fn,
        method="lm",
        init_damping=init_damping,
        loss=loss,
        f_scale=f_scale,
        jacobian_mode=jacobian_mode,
        jac=jac,
        chunk_rows=chunk_rows,
    )


def damped_least_squares(
    residual_fn: Callable[[Any, Any], jax.Array],
    *,
    method: str = "lm",
    init_damping: float = 1e-3,
    loss: str = "linear",
    f_scale: float = 1.0,
    jacobian_mode: str = "auto",
    jac: Callable | None = None,
    chunk_rows: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The trial-and-judge transformation behind LM, for each method.

    ``method="lm"`` is :func:`scale_by_levenberg_marquardt`. ``"gn"`` takes
    the Gauss-Newton step instead and accepts it whenever the new cost is
    finite; ``"tr"`` takes the step within a trust region on ``||D d||``
    (SciPy ``trf``'s radius update; ``state.damping`` holds the radius, its
    start ``||D x0||``; dense ``J^T J`` always). All three keep the same
    state and diagnostics (actual and predicted reductions, ``nfev``): what
    the on-device loop of :func:`jaxfit.least_squares_solve` drives.
    """
    if method not in _steps.METHODS:
        raise ValueError(f"`method` must be one of {_steps.METHODS!r}, got {method!r}")
    _ne.check_options(loss, f_scale, jacobian_mode, jac, chunk_rows)
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
        flat, unravel, flat_fn = _ne.flat_problem(residual_fn, params, batch)
        dtype = flat.dtype
        dense = chunk_rows or method == "tr"  # a trust region needs J^T J
        mode = "dense" if dense else _ne.mode_for(flat, flat_fn, jacobian_mode, jac)
        if mode == "matrix_free":
            cost, normal_matvec, g = _ne.matrix_free(flat_fn, flat, loss, f_scale)
            scale = jnp.ones_like(flat)
            fresh = jnp.ones([], bool)
        else:
            reuse = state.valid & jnp.all(flat == state.base)

            def compute(_):
                return _ne.dense_normal_equations(
                    residual_fn, params, batch, opts, chunk_rows
                )

            # The scale already holds the cached point's column norms.
            cached = lambda _: (state.cost, state.hessian, state.gradient, state.scale)
            cost, A, g, column_norms2 = jax.lax.cond(reuse, cached, compute, None)
            cost = cost.astype(dtype)
            fresh = ~reuse
            normal_matvec = lambda v: A @ v
        damping = state.damping
        if method == "tr":  # the radius: on the first step, from the start's J
            first = _steps.initial_radius(flat, column_norms2)
            damping = jnp.where(state.valid, damping, first.astype(dtype))
        if mode == "matrix_free":
            # Gauss-Newton: no damping term (CG gives a least-norm step).
            shift = damping * scale if method == "lm" else 0.0
            damped = lambda v: normal_matvec(v) + shift * v
            step, _ = jax.scipy.sparse.linalg.cg(damped, -g, maxiter=4 * flat.size)
        else:
            step, scale = _steps.propose(
                method, A, g, damping, state.scale, column_norms2
            )
        step = step.astype(dtype)
        new_cost = _ne.cost_at(
            residual_fn, unravel, flat + step, batch, loss, f_scale, chunk_rows
        ).astype(dtype)
        actual, predicted, ratio, accepted, new_damping, new_nu = _steps.judge(
            method, cost, new_cost, step, g, damping, scale, state.nu, flat,
            None if mode == "matrix_free" else A,
        )  # fmt: skip
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
