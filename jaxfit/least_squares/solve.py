"""The on-device loop driver behind ``curve_fit``.

:func:`least_squares_solve` is one ``lax.while_loop`` that applies the
engine's trial-and-judge transformation (Levenberg-Marquardt, or
Gauss-Newton) until SciPy's ``ftol``/``xtol``/``gtol`` tests or ``max_nfev``
stop it: a pure JAX function that jits and vmaps over many independent
datasets.
:func:`least_squares_solve_many` runs many such fits in compacted rounds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxfit import _checks
from jaxfit._callables import CallableCache
from jaxfit.least_squares import status as _status
from jaxfit.transforms.combine import apply_updates
from jaxfit.transforms.least_squares import damped_least_squares

_RUNNING = _status.RUNNING


class LeastSquaresSolution(NamedTuple):
    """What :func:`least_squares_solve` returns (all JAX arrays).

    ``status`` follows SciPy's ``least_squares``: 0 ``max_nfev`` reached,
    1 ``gtol``, 2 ``ftol``, 3 ``xtol``, 4 ``ftol`` and ``xtol``; -2 the
    residuals are not finite at the start, -3 a Gauss-Newton step made them
    non-finite (the params are the last finite point); see
    ``jaxfit.least_squares.STATUS_MESSAGES``.
    """

    params: Any
    cost: jax.Array
    grad_norm: jax.Array
    nfev: jax.Array
    njev: jax.Array
    status: jax.Array
    iterations: jax.Array

    @property
    def message(self) -> str | list[str]:
        """``status`` in words (a list for a batch of fits); read on the host."""
        status = np.asarray(self.status)
        if status.ndim == 0:
            return _status.STATUS_MESSAGES[int(status)]
        return [_status.STATUS_MESSAGES[int(s)] for s in status.ravel()]


def least_squares_solve(
    residual_fn: Callable[[Any, Any], jax.Array],
    params0: Any,
    batch: Any = None,
    *,
    loss: str = "linear",
    f_scale: Any = 1.0,
    ftol: Any = 1e-8,
    xtol: Any = 1e-8,
    gtol: Any = 1e-8,
    max_nfev: Any = None,
    init_damping: float = 1e-3,
    jacobian_mode: str = "auto",
    jac: Callable | None = None,
    chunk_rows: int | None = None,
    method: str = "lm",
) -> LeastSquaresSolution:
    """Minimises the robust cost of ``residual_fn`` in one ``lax.while_loop``.

    The loop body is one ``scale_by_levenberg_marquardt`` update; nothing
    returns to the host until the loop ends, so the function jits, vmaps
    (many datasets at once: the loop runs until the slowest converges) and
    runs on any device. Stopping tests are MINPACK's, on every trial step:
    ``ftol`` on the actual and predicted relative cost reductions, ``xtol``
    on the step norm relative to ``norm(params)``, ``gtol`` on the infinity
    norm of the gradient ``J^T r``.

    Args:
      residual_fn: ``(params, batch) -> r``; params any pytree.
      params0: the starting params.
      batch: passed to ``residual_fn`` (arrays may be vmapped over).
      loss, f_scale: robust loss, as :func:`jaxfit.residual_loss`.
      ftol, xtol, gtol: tolerances (scalars; may be traced).
      max_nfev: maximum residual evaluations; default ``100 * (n + 1)``,
        SciPy's budget with an exact Jacobian.
      init_damping, jacobian_mode, jac, chunk_rows: as
        :func:`jaxfit.scale_by_levenberg_marquardt`.
      method: ``"lm"`` (Levenberg-Marquardt), ``"gn"`` (undamped
        Gauss-Newton: every step with a finite cost is taken, so it may
        climb; fast on well-posed problems started near the optimum) or
        ``"tr"`` (a trust region on ``||D d||`` with SciPy ``trf``'s radius
        update; ``curve_fit`` retries with it when LM runs out of
        evaluations).

    Returns:
      A :class:`LeastSquaresSolution`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxfit
      >>> res = lambda p, b: p[0] * jnp.exp(p[1] * b[0]) - b[1]
      >>> x = jnp.linspace(0.0, 1.0, 10)
      >>> ys = jnp.stack([2.0 * jnp.exp(-x), 3.0 * jnp.exp(0.5 * x)])
      >>> solve = lambda y: jaxfit.least_squares_solve(res, jnp.ones(2), (x, y))
      >>> sol = jax.vmap(solve)(ys)  # two independent fits at once
      >>> sol.params.round(4), bool((sol.status > 0).all())
      (Array([[ 2. , -1. ],
             [ 3. ,  0.5]], dtype=float32), True)
    """
    tx, stop_status = _solver(
        residual_fn,
        params0,
        (ftol, xtol, gtol, max_nfev),
        method=method,
        init_damping=init_damping,
        loss=loss,
        f_scale=f_scale,
        jacobian_mode=jacobian_mode,
        jac=jac,
        chunk_rows=chunk_rows,
    )
    carry = _run(tx, stop_status, _start(tx, params0), batch, None)
    return _solution(carry, ravel_pytree(params0)[0].dtype)


class _Carry(NamedTuple):
    params: Any
    state: Any
    status: jax.Array


def _solver(residual_fn, params0, tolerances, **lm_options):
    """The transformation and the status it gives a finished iteration.

    ``tolerances`` is ``(ftol, xtol, gtol, max_nfev)``; ``lm_options`` go to
    :func:`jaxfit.transforms.least_squares.damped_least_squares`.
    """
    if not callable(residual_fn):
        raise ValueError(f"`residual_fn` must be callable, got {residual_fn!r}")
    for name, value in zip(("ftol", "xtol", "gtol"), tolerances[:3], strict=True):
        _checks.non_negative(name, value)
    ftol, xtol, gtol, max_nfev = tolerances
    if max_nfev is None:
        # SciPy's budget with an exact Jacobian (MINPACK lmder): jaxfit's is
        # autodiff, so it is not charged n evaluations as finite differences.
        max_nfev = 100 * (ravel_pytree(params0)[0].size + 1)
    tx = damped_least_squares(residual_fn, **lm_options)
    gauss_newton = lm_options.get("method") == "gn"

    def stop_status(params, state):
        base_cost = jnp.where(
            state.accepted, state.cost + state.actual_reduction, state.cost
        )
        judgement = (state.actual_reduction, state.predicted_reduction, state.ratio)
        status = _status.stop_status(
            judgement,
            base_cost,
            state.step_norm,
            jnp.linalg.norm(ravel_pytree(params)[0]),
            state.grad_norm,
            (ftol, xtol, gtol),
            diverged=gauss_newton & ~state.accepted,
        )
        exhausted = (status == _RUNNING) & (state.nfev >= max_nfev)
        return jnp.where(exhausted, 0, status)

    return tx, stop_status


def _start(tx, params0):
    return _Carry(params0, tx.init(params0), jnp.asarray(_RUNNING, jnp.int32))


def _run(tx, stop_status, carry, batch, max_iterations):
    """Iterates until a stopping test holds, or ``max_iterations`` more."""
    stop = None if max_iterations is None else carry.state.count + max_iterations

    def running(c):
        go = c.status == _RUNNING
        return go if stop is None else go & (c.state.count < stop)

    def body(c):
        updates, state = tx.update(c.params, c.state, c.params, batch=batch)
        return _Carry(
            apply_updates(c.params, updates), state, stop_status(c.params, state)
        )

    return jax.lax.while_loop(running, body, carry)


def _solution(carry, dtype):
    state = carry.state
    return LeastSquaresSolution(
        params=carry.params,
        cost=state.cost.astype(dtype),
        grad_norm=state.grad_norm,
        nfev=state.nfev,
        njev=state.njev,
        status=carry.status,
        iterations=state.count,
    )


def least_squares_solve_many(
    residual_fn: Callable[[Any, Any], jax.Array],
    params0: Any,
    batch: Any = None,
    *,
    shared: Any = None,
    round_iterations: int = 8,
    loss: str = "linear",
    f_scale: Any = 1.0,
    ftol: Any = 1e-8,
    xtol: Any = 1e-8,
    gtol: Any = 1e-8,
    max_nfev: Any = None,
    init_damping: float = 1e-3,
    jacobian_mode: str = "auto",
    jac: Callable | None = None,
    method: str = "lm",
) -> LeastSquaresSolution:
    """Many independent :func:`least_squares_solve` fits, compacted in rounds.

    Every leaf of ``params0`` and ``batch`` has a leading axis of fits. A
    plain ``jax.vmap`` of :func:`least_squares_solve` runs every fit until
    the slowest one stops, so one fit that never converges makes the whole
    batch run to ``max_nfev``. Here the vmapped solver runs in rounds of
    ``round_iterations`` (doubling each round) and only the fits still
    running go on to the next round, gathered into a smaller batch (padded
    to a power of two, so a handful of programs compile). Each fit's result
    is the one it would get alone: the rounds resume the same iteration.

    Args:
      residual_fn: ``(params, batch) -> r`` for one fit.
      params0: starting params, each leaf with a leading axis of fits.
      batch: data, each leaf with the same leading axis (or None).
      shared: a dict of data common to every fit (no leading axis), merged
        into each fit's dict ``batch``: e.g. ``{"x": x}`` with
        ``batch={"y": ys}`` for :func:`jaxfit.model_residual`.
      round_iterations: LM iterations in the first round; > 0.
      options: ``loss``, ``f_scale``, ``ftol``, ``xtol``, ``gtol``,
        ``max_nfev``, ``init_damping``, ``jacobian_mode``, ``jac`` and
        ``method``, as :func:`least_squares_solve` (the same for every fit).

    Returns:
      A :class:`LeastSquaresSolution` whose leaves have the leading axis.

    Raises:
      ValueError: leaves with different leading sizes, ``shared`` with a
        batch that is not a dict, or a bad option.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> res = lambda p, b: p[0] * jnp.exp(p[1] * b[0]) - b[1]
      >>> x = jnp.linspace(0.0, 1.0, 10)
      >>> ys = jnp.stack([2.0 * jnp.exp(-x), 3.0 * jnp.exp(0.5 * x)])
      >>> sol = jaxfit.least_squares_solve_many(
      ...     res, jnp.ones((2, 2)), (jnp.stack([x, x]), ys))
      >>> model = jaxfit.model_residual(lambda x, a, k: a * jnp.exp(k * x))
      >>> same = jaxfit.least_squares_solve_many(
      ...     model, jnp.ones((2, 2)), {"y": ys}, shared={"x": x})
      >>> bool(jnp.allclose(same.params, sol.params, atol=1e-5))
      True
      >>> sol.params.round(4), bool((sol.status > 0).all())
      (Array([[ 2. , -1. ],
             [ 3. ,  0.5]], dtype=float32), True)
    """
    if not callable(residual_fn):
        raise ValueError(f"`residual_fn` must be callable, got {residual_fn!r}")
    _checks.positive_int("round_iterations", round_iterations)
    # Checked here: inside the compiled rounds they are traced.
    for name, value in (("ftol", ftol), ("xtol", xtol), ("gtol", gtol)):
        _checks.non_negative(name, value)
    _checks.positive("init_damping", init_damping)
    params0, batch = jax.tree.map(jnp.asarray, (params0, batch))
    sizes = {
        leaf.shape[0] if leaf.ndim else None
        for leaf in jax.tree.leaves((params0, batch))
    }
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "`params0` and `batch` leaves must share one leading axis of fits, "
            f"got leading sizes {sorted(map(str, sizes))}"
        )
    (n_fits,) = sizes
    if shared is not None and not isinstance(batch, dict):
        raise ValueError(
            "`shared` is merged into a dict `batch`, got a batch of type "
            f"{type(batch).__name__}"
        )
    shared = jax.tree.map(jnp.asarray, shared)
    start, run_round = _MANY.get(
        (residual_fn, jac),
        (loss, float(init_damping), jacobian_mode, method),
        _many_programs,
    )
    options = (*map(jnp.asarray, (f_scale, ftol, xtol, gtol)), max_nfev)
    carry = start(params0)
    running = np.arange(n_fits)
    cap = round_iterations
    while running.size:
        # Pad with copies of the last running fit: a copy computes the same
        # numbers, so scattering it back is harmless.
        size = (
            n_fits
            if running.size == n_fits
            else min(n_fits, 1 << (running.size - 1).bit_length())
        )
        lanes = np.concatenate([running, np.full(size - running.size, running[-1])])
        carry, status = run_round(
            carry, batch, shared, jnp.asarray(lanes), options, np.int32(cap)
        )
        running = running[np.asarray(status)[: running.size] == _RUNNING]
        cap *= 2
    return _solution(carry, ravel_pytree(params0)[0].dtype)


def _many_solver(static, params, options):
    residual_fn, loss, init_damping, jacobian_mode, method, jac = static
    f_scale, *tolerances = options
    return _solver(
        residual_fn,
        params,
        tolerances,
        loss=loss,
        f_scale=f_scale,
        init_damping=init_damping,
        jacobian_mode=jacobian_mode,
        jac=jac,
        method=method,
    )


# One pair of compiled programs per residual function (and jac), held
# weakly: an unhashable callable is fine, and dropping it frees them.
_MANY = CallableCache()


def _many_programs(residual_fn, jac, loss, init_damping, jacobian_mode, method):
    static = (residual_fn, loss, init_damping, jacobian_mode, method, jac)
    return (
        jax.jit(functools.partial(_many_start, static)),
        jax.jit(functools.partial(_many_round, static), donate_argnums=0),
    )


def _many_start(static, params0):
    tx, _ = _many_solver(
        static, jax.tree.map(lambda a: a[0], params0), (1.0, 0.0, 0.0, 0.0, None)
    )
    return jax.vmap(lambda p: _start(tx, p))(params0)


def _many_round(static, carry, batch, shared, lanes, options, max_iterations):
    """Runs the fits ``lanes`` for up to ``max_iterations`` more; scatters back."""
    take = lambda tree: jax.tree.map(lambda a: a[lanes], tree)

    def run(c, b):
        tx, stop_status = _many_solver(static, c.params, options)
        b = b if shared is None else {**shared, **b}
        return _run(tx, stop_status, c, b, max_iterations)

    out = jax.vmap(run)(take(carry), take(batch))
    carry = jax.tree.map(lambda a, o: a.at[lanes].set(o), carry, out)
    return carry, out.status
