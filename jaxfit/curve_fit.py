"""A SciPy-compatible ``curve_fit`` on a device-side Levenberg-Marquardt loop.

The solver is :func:`least_squares_solve`: one ``lax.while_loop`` that applies
:func:`jaxfit.scale_by_levenberg_marquardt`'s update until SciPy's
``ftol``/``xtol``/``gtol`` tests or ``max_nfev`` stop it. It is a pure JAX
function, so it can be jitted and vmapped over many independent datasets.
:func:`curve_fit` wraps it with SciPy's argument handling, scoped float64,
bounds (a smooth change of variables), padding to size buckets (one compiled
program per bucket, not per data length) and SciPy's covariance.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxfit import residuals as _res
from jaxfit.transforms import least_squares as _ls
from jaxfit.transforms.combine import apply_updates
from jaxfit.transforms.least_squares import scale_by_levenberg_marquardt

try:  # SciPy users filter SciPy's warning class; keep it when SciPy exists.
    from scipy.optimize import OptimizeWarning
except ImportError:  # pragma: no cover

    class OptimizeWarning(UserWarning):
        """The covariance of the parameters could not be estimated."""


_RUNNING = -10
STATUS_MESSAGES = {
    -2: "The residuals are not finite at the initial point.",
    0: "The maximum number of function evaluations is exceeded.",
    1: "`gtol` termination condition is satisfied.",
    2: "`ftol` termination condition is satisfied.",
    3: "`xtol` termination condition is satisfied.",
    4: "Both `ftol` and `xtol` termination conditions are satisfied.",
}


class LeastSquaresSolution(NamedTuple):
    """What :func:`least_squares_solve` returns (all JAX arrays).

    ``status`` follows SciPy's ``least_squares``: 0 ``max_nfev`` reached,
    1 ``gtol``, 2 ``ftol``, 3 ``xtol``, 4 ``ftol`` and ``xtol``; -2 the
    residuals are not finite at the start.
    """

    params: Any
    cost: jax.Array
    grad_norm: jax.Array
    nfev: jax.Array
    njev: jax.Array
    status: jax.Array
    iterations: jax.Array


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
    tx, stop_status = _lm_solver(
        residual_fn,
        params0,
        (ftol, xtol, gtol, max_nfev),
        init_damping=init_damping,
        loss=loss,
        f_scale=f_scale,
        jacobian_mode=jacobian_mode,
        jac=jac,
        chunk_rows=chunk_rows,
    )
    carry = _lm_run(tx, stop_status, _lm_start(tx, params0), batch, None)
    return _solution(carry, ravel_pytree(params0)[0].dtype)


class _Carry(NamedTuple):
    params: Any
    state: Any
    status: jax.Array


def _lm_solver(residual_fn, params0, tolerances, **lm_options):
    """The LM transformation and the status it gives a finished iteration.

    ``tolerances`` is ``(ftol, xtol, gtol, max_nfev)``; ``lm_options`` go to
    :func:`jaxfit.scale_by_levenberg_marquardt`.
    """
    ftol, xtol, gtol, max_nfev = tolerances
    if max_nfev is None:
        # SciPy's budget with an exact Jacobian (MINPACK lmder): jaxfit's is
        # autodiff, so it is not charged n evaluations as finite differences.
        max_nfev = 100 * (ravel_pytree(params0)[0].size + 1)
    tx = scale_by_levenberg_marquardt(residual_fn, **lm_options)

    def stop_status(params, state):
        base_cost = jnp.where(
            state.accepted, state.cost + state.actual_reduction, state.cost
        )
        x_norm = jnp.linalg.norm(ravel_pytree(params)[0])
        f_ok = (
            (jnp.abs(state.actual_reduction) <= ftol * base_cost)
            & (state.predicted_reduction <= ftol * base_cost)
            & (state.ratio <= 2)
        )
        x_ok = state.step_norm <= xtol * (xtol + x_norm)
        g_ok = state.grad_norm <= gtol
        return jnp.select(
            [
                ~jnp.isfinite(base_cost),
                g_ok,
                f_ok & x_ok,
                f_ok,
                x_ok,
                state.nfev >= max_nfev,
            ],
            [-2, 1, 4, 2, 3, 0],
            _RUNNING,
        ).astype(jnp.int32)

    return tx, stop_status


def _lm_start(tx, params0):
    return _Carry(params0, tx.init(params0), jnp.asarray(_RUNNING, jnp.int32))


def _lm_run(tx, stop_status, carry, batch, max_iterations):
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
        ``max_nfev``, ``init_damping``, ``jacobian_mode`` and ``jac``, as
        :func:`least_squares_solve` (the same for every fit).

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
    from jaxfit import _checks

    _checks.positive_int("round_iterations", round_iterations)
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
    static = (residual_fn, loss, float(init_damping), jacobian_mode, jac)
    options = (*map(jnp.asarray, (f_scale, ftol, xtol, gtol)), max_nfev)
    carry = _many_start(static, params0)
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
        carry, status = _many_round(
            static, carry, batch, shared, jnp.asarray(lanes), options, np.int32(cap)
        )
        running = running[np.asarray(status)[: running.size] == _RUNNING]
        cap *= 2
    return _solution(carry, ravel_pytree(params0)[0].dtype)


def _many_solver(static, params, options):
    residual_fn, loss, init_damping, jacobian_mode, jac = static
    f_scale, *tolerances = options
    return _lm_solver(
        residual_fn,
        params,
        tolerances,
        loss=loss,
        f_scale=f_scale,
        init_damping=init_damping,
        jacobian_mode=jacobian_mode,
        jac=jac,
    )


@functools.partial(jax.jit, static_argnums=0)
def _many_start(static, params0):
    tx, _ = _many_solver(
        static, jax.tree.map(lambda a: a[0], params0), (1.0, 0.0, 0.0, 0.0, None)
    )
    return jax.vmap(lambda p: _lm_start(tx, p))(params0)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def _many_round(static, carry, batch, shared, lanes, options, max_iterations):
    """Runs the fits ``lanes`` for up to ``max_iterations`` more; scatters back."""
    take = lambda tree: jax.tree.map(lambda a: a[lanes], tree)

    def run(c, b):
        tx, stop_status = _many_solver(static, c.params, options)
        b = b if shared is None else {**shared, **b}
        return _lm_run(tx, stop_status, c, b, max_iterations)

    out = jax.vmap(run)(take(carry), take(batch))
    carry = jax.tree.map(lambda a, o: a.at[lanes].set(o), carry, out)
    return carry, out.status


# Bounds by a change of variables p = T(u) (as MINUIT and lmfit): both
# bounds lo + (hi - lo) (sin u + 1) / 2; a lower one lo - 1 + sqrt(u^2 + 1);
# an upper one hi + 1 - sqrt(u^2 + 1). Chosen per element with `where` on
# finite-ness, so new bounds never recompile; infinite bounds are replaced by
# 0 inside unselected branches so they make no NaN gradients. An unbounded
# fit passes None: a program without the maps (~20% less XLA compile).
def _bound_kinds(lo, hi):
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    return has_lo, has_hi, jnp.where(has_lo, lo, 0.0), jnp.where(has_hi, hi, 0.0)


def _to_external(u, lo, hi):
    if lo is None:
        return u
    has_lo, has_hi, lo, hi = _bound_kinds(lo, hi)
    root = jnp.sqrt(u * u + 1)
    both = lo + (hi - lo) * (jnp.sin(u) + 1) / 2
    return jnp.where(
        has_lo & has_hi,
        both,
        jnp.where(has_lo, lo - 1 + root, jnp.where(has_hi, hi + 1 - root, u)),
    )


def _to_internal(p, lo, hi):
    if lo is None:
        return p
    has_lo, has_hi, lo, hi = _bound_kinds(lo, hi)
    width = jnp.where(has_lo & has_hi, hi - lo, 1.0)
    both = jnp.arcsin(jnp.clip(2 * (p - lo) / width - 1, -1, 1))
    lower = jnp.sqrt(jnp.maximum((p - lo + 1) ** 2 - 1, 0))
    upper = jnp.sqrt(jnp.maximum((hi - p + 1) ** 2 - 1, 0))
    return jnp.where(
        has_lo & has_hi, both, jnp.where(has_lo, lower, jnp.where(has_hi, upper, p))
    )


def _covariance(R, m, n):
    """SciPy's Moore-Penrose covariance ``(J^T J)^+`` and a rank flag.

    From the SVD of ``R`` of a QR of ``J`` (the same singular values as
    ``J``, in ``n x n``), with SciPy's relative cut-off.
    """
    _, s, vt = jnp.linalg.svd(R, full_matrices=False)
    threshold = jnp.finfo(R.dtype).eps * jnp.maximum(m, n) * s[0]
    keep = s > threshold
    inv_s2 = jnp.where(keep, 1 / jnp.where(keep, s, 1.0) ** 2, 0.0)
    return (vt.T * inv_s2) @ vt, jnp.all(keep)


def _fit_impl(
    model, loss, jac, full_output, chunk_rows, x, y, extras, p0, lo, hi, options
):
    """The compiled body of ``curve_fit`` (one program per model and bucket).

    With ``chunk_rows`` (a 1-D ``x`` and a pointwise model) the normal
    equations and the covariance's ``R`` are accumulated over row blocks,
    so no ``m x n`` Jacobian is ever formed.
    """
    f_scale, ftol, xtol, gtol, max_nfev, init_damping = options
    batch = {"x": x, "y": y, **extras}
    residual = _res.model_residual(model)
    residual_u = lambda u, b: residual(_to_external(u, lo, hi), b)

    def weighted_jac(p, b):  # the user's model Jacobian, weighted and masked
        Jm = jnp.asarray(jac(b["x"], *p), p.dtype).reshape(b["y"].size, -1)
        return jax.vmap(lambda col: _res.weight_and_mask(col, b), 1, 1)(Jm)

    jac_u = None
    if jac is not None:

        def jac_u(u, b):
            slope = jax.jvp(lambda v: _to_external(v, lo, hi), (u,), (1.0 + 0 * u,))
            return weighted_jac(_to_external(u, lo, hi), b) * slope[1]

    sol = least_squares_solve(
        residual_u,
        _to_internal(p0, lo, hi),
        batch,
        loss=loss,
        f_scale=f_scale,
        ftol=ftol,
        xtol=xtol,
        gtol=gtol,
        max_nfev=max_nfev,
        init_damping=init_damping,
        jac=jac_u,
        chunk_rows=chunk_rows,
    )
    popt = _to_external(sol.params, lo, hi)

    # Covariance in the user's parameters: the Jacobian there, reweighted for
    # a robust loss as SciPy's `res.jac`.
    def residual_and_jac(b):
        if jac is None:
            r, J = _res.residual_and_jacobian(lambda p: residual(p, b), popt, "forward")
        else:
            r, J = residual(popt, b), weighted_jac(popt, b)
        _, row = _res.robust_scaling(r, loss, f_scale)
        return r, J * row[:, None]

    m = jnp.sum(extras["mask"]) if "mask" in extras else y.size
    if chunk_rows is None:
        r, J = residual_and_jac(batch)
        R = jnp.linalg.qr(J, mode="r")
    else:  # TSQR: R of [R; J_block] block by block (the same singular values)
        R = jnp.zeros((popt.size, popt.size), popt.dtype)
        blocks = _ls._row_blocks(batch, chunk_rows)
        qr = lambda R, b: (
            jnp.linalg.qr(jnp.concatenate([R, residual_and_jac(b)[1]]), mode="r"),
            None,
        )
        R = jax.lax.scan(qr, R, blocks)[0]
    pcov, full_rank = _covariance(R, m, popt.size)
    out = {
        "popt": popt,
        "pcov": pcov,
        "full_rank": full_rank,
        "cost": sol.cost,
        "nfev": sol.nfev,
        "njev": sol.njev,
        "status": sol.status,
        "grad_norm": sol.grad_norm,
        "m": m,
    }
    if full_output:
        out["fun"], out["jac"] = (
            (r, J) if chunk_rows is None else residual_and_jac(batch)
        )
    return out


_fit = jax.jit(_fit_impl, static_argnums=(0, 1, 2, 3, 4))


class CurveFitResult(NamedTuple):
    """``curve_fit(..., full_output=True)``'s result (NumPy arrays).

    ``fun`` and ``jac`` are the weighted residuals and Jacobian (reweighted
    for a robust loss, as SciPy's ``least_squares``) at ``popt``, for the
    points actually fitted (padding and omitted NaNs removed).
    """

    popt: np.ndarray
    pcov: np.ndarray
    perr: np.ndarray
    cost: float
    nfev: int
    njev: int
    status: int
    message: str
    success: bool
    fun: np.ndarray
    jac: np.ndarray


def _bucket(m: int) -> int:
    """Rounds ``m`` up to one of 8 sizes per octave (at most 12.5% padding)."""
    if m <= 16:
        return 16
    step = 2 ** (m.bit_length() - 4)
    return -(-m // step) * step


def _n_params_of(f, p0):
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is p.empty]
    return len(required) - 1, len(positional) - 1


def _feasible_start(lb, ub):
    p0 = np.ones_like(lb)
    both = np.isfinite(lb) & np.isfinite(ub)
    p0[both] = 0.5 * (lb[both] + ub[both])
    lower = np.isfinite(lb) & ~np.isfinite(ub)
    p0[lower] = lb[lower] + 1
    upper = ~np.isfinite(lb) & np.isfinite(ub)
    p0[upper] = ub[upper] - 1
    return p0


_OPTIONS = (
    "ftol",
    "xtol",
    "gtol",
    "max_nfev",
    "maxfev",
    "init_damping",
    "pad",
    "chunk_rows",
)

# Data of at least this many (padded) points is fitted in row blocks of
# _CHUNK_ROWS when the model is pointwise: a dense Jacobian of a 1e7-point,
# 8-parameter fit alone is 640 MB. From 1e6 points (a 2**20 bucket) the
# blocks, which stay in cache, make repeat fits faster (2 CPU cores: 0.134
# -> 0.096 s with 3 parameters, 0.459 -> 0.287 s with 8) for a first call
# that compiles ~0.35 s longer with 3 (the blocks' scans are extra code) and
# no longer with 8. Buckets this large are multiples of _CHUNK_ROWS.
_CHUNK_FROM = 1 << 20
_CHUNK_ROWS = 1 << 16


def _is_pointwise(f, x, p0, k=8):
    """Whether ``f``'s value at a point depends on that point alone.

    A probe, not a proof: ``f`` on the first ``2k`` points must equal ``f``
    on each half (a model that normalises by ``x.max()``, sums over ``x``
    or uses positions like ``arange`` fails it).
    """
    try:
        both = np.asarray(f(jnp.asarray(x[: 2 * k]), *p0))
        halves = [np.asarray(f(jnp.asarray(x[i : i + k]), *p0)) for i in (0, k)]
    except Exception:
        return False
    if both.shape != (2 * k,) or any(h.shape != (k,) for h in halves):
        return False
    return bool(np.allclose(both, np.concatenate(halves), rtol=1e-12, atol=0))


def _chunk_rows(requested, f, x, extras, p0):
    """Rows per block for ``_fit`` (None: the whole Jacobian at once)."""
    size = len(x) if np.ndim(x) == 1 else None
    if requested is not None:  # the user's choice (0 or False: off)
        if not requested:
            return None
        if np.ndim(x) != 1 or "scale_tril" in extras or size % int(requested):
            raise ValueError(
                "`chunk_rows` needs 1-D `xdata`, 1-D `sigma` and a divisor of "
                f"the padded length, got {requested!r}"
            )
        return int(requested)
    if (
        size is None
        or size < _CHUNK_FROM
        or size % _CHUNK_ROWS
        or "scale_tril" in extras
        or not _is_pointwise(f, x, p0)
    ):
        return None
    return _CHUNK_ROWS


def curve_fit(
    f: Callable,
    xdata: Any,
    ydata: Any,
    p0: Any = None,
    sigma: Any = None,
    absolute_sigma: bool = False,
    check_finite: bool | None = None,
    bounds: Any = (-np.inf, np.inf),
    method: str | None = None,
    jac: Any = None,
    *,
    full_output: bool = False,
    nan_policy: str | None = None,
    loss: str = "linear",
    f_scale: float = 1.0,
    **kwargs: Any,
):
    """Fits ``f(xdata, *params)`` to ``ydata``, as ``scipy.optimize.curve_fit``.

    Write ``f`` with ``jax.numpy``. The fit runs in float64 inside a scoped
    ``jax.enable_x64`` (the global JAX configuration is left alone) and
    returns NumPy arrays. Every method (``lm``, ``trf``, ``dogbox``) runs
    jaxfit's Levenberg-Marquardt loop on the device; bounds are handled by a
    smooth change of variables (see ``docs/curve_fit.md``) and ``pcov``
    is in the user's parameters. Data is padded to one of 8 sizes per octave
    with a mask, so refits of other lengths reuse compiled code.

    Args:
      f: the model ``f(x, *params)``.
      xdata: the independent variable (array; its last axis is the points).
      ydata: the 1-D data, length ``m``.
      p0: initial parameters; default ones (or a feasible point inside
        ``bounds``), with their number taken from ``f``'s signature.
      sigma: None, 1-D standard deviations or a 2-D covariance of ``ydata``.
      absolute_sigma: if False, ``pcov`` is scaled by the reduced chi-square.
      check_finite: raise on NaN or inf in the data (default True unless
        ``nan_policy`` is given).
      bounds: ``(lower, upper)`` scalars or length-``n`` sequences.
      method: ``None``, ``'lm'``, ``'trf'`` or ``'dogbox'`` (all run jaxfit's
        LM; ``'lm'`` with bounds is an error, as in SciPy).
      jac: None (autodiff), a SciPy string (autodiff is used), or a callable
        ``jac(x, *params)`` returning the ``m x n`` model Jacobian.
      full_output: return a :class:`CurveFitResult` instead of the pair.
      nan_policy: None, ``'raise'``, ``'omit'`` (drop non-finite points via
        the mask) or ``'propagate'``.
      loss, f_scale: robust loss as SciPy's ``least_squares``.
      **kwargs: ``ftol``, ``xtol``, ``gtol`` (default 1e-8), ``max_nfev``
        (or ``maxfev``), ``init_damping``, ``pad`` (default True),
        ``chunk_rows`` (default: row blocks of 65536 from 2**20 points of a
        pointwise model; 0 turns them off).

    Returns:
      ``(popt, pcov)``, or a :class:`CurveFitResult` with ``full_output``.

    Raises:
      ValueError: bad input, named: non-finite data, mismatched shapes,
        ``p0`` of the wrong length or outside ``bounds``, fewer points than
        parameters, unknown options.
      RuntimeError: the fit did not converge within ``max_nfev``.

    Example:
      >>> import numpy as np, jax.numpy as jnp, jaxfit
      >>> x = np.linspace(0, 4, 50)
      >>> y = 2.5 * np.exp(-1.3 * x) + 0.5
      >>> f = lambda x, a, k, c: a * jnp.exp(-k * x) + c
      >>> popt, pcov = jaxfit.curve_fit(f, x, y, p0=[1.0, 1.0, 0.0])
      >>> popt.round(6)
      array([2.5, 1.3, 0.5])
    """
    unknown = set(kwargs) - set(_OPTIONS)
    if unknown:
        raise ValueError(f"unknown keyword arguments {sorted(unknown)!r}")
    if not callable(f):
        raise ValueError(f"`f` must be callable, got {f!r}")
    if method not in (None, "lm", "trf", "dogbox"):
        raise ValueError(
            f"`method` must be None, 'lm', 'trf' or 'dogbox', got {method!r}"
        )
    if nan_policy not in (None, "raise", "omit", "propagate"):
        raise ValueError(
            "`nan_policy` must be None, 'raise', 'omit' or 'propagate', "
            f"got {nan_policy!r}"
        )
    _res._check_loss(loss)
    if not (np.isscalar(f_scale) and 0 < f_scale < np.inf):
        raise ValueError(f"`f_scale` must be finite and > 0, got {f_scale!r}")
    if (
        jac is not None
        and not callable(jac)
        and jac not in ("2-point", "3-point", "cs")
    ):
        raise ValueError(f"`jac` must be None, callable or a SciPy string, got {jac!r}")
    user_jac = jac if callable(jac) else None

    with jax.enable_x64(True):
        ydata = np.asarray(ydata, np.float64)
        if ydata.ndim != 1:
            ydata = ydata.ravel()
        m = ydata.size
        if m == 0:
            raise ValueError("`ydata` must not be empty")
        xdata = np.asarray(xdata, np.float64)
        if xdata.ndim >= 1 and xdata.shape[-1] != m and xdata.shape[0] != m:
            raise ValueError(
                f"`xdata` (shape {xdata.shape}) does not match `ydata` ({m} points)"
            )
        if check_finite is None:
            check_finite = nan_policy is None
        finite = np.isfinite(ydata)
        if xdata.ndim >= 1 and xdata.shape[-1] == m:
            finite &= np.all(np.isfinite(xdata.reshape(-1, m)), axis=0)
        if check_finite or nan_policy == "raise":
            if not np.all(finite) or not np.all(np.isfinite(xdata)):
                where = "ydata" if not np.all(np.isfinite(ydata)) else "xdata"
                raise ValueError(f"`{where}` contains NaN or inf")
        mask = finite if nan_policy == "omit" else np.ones(m, bool)
        m_used = int(mask.sum())

        # Parameters: their number, p0 and bounds.
        counts = _n_params_of(f, p0)
        if p0 is None:
            if counts is None:
                raise ValueError("`p0` is required: cannot count the parameters of `f`")
            n = counts[0]
            if n < 1:
                raise ValueError("`f` must take the parameters after `x`")
        else:
            p0 = np.atleast_1d(np.asarray(p0, np.float64))
            if p0.ndim != 1:
                raise ValueError(f"`p0` must be 1-D, got shape {p0.shape}")
            n = p0.size
            if counts is not None and not counts[0] <= n <= counts[1]:
                raise ValueError(
                    f"`p0` has {n} values but `f` takes {counts[0]} parameters"
                )
        try:
            lb, ub = (
                np.broadcast_to(np.asarray(b, np.float64), (n,)).copy() for b in bounds
            )
        except (TypeError, ValueError):
            raise ValueError(
                f"`bounds` must be (lower, upper) with n={n} values"
            ) from None
        if np.any(lb >= ub):
            raise ValueError("`bounds`: each lower bound must be < its upper bound")
        bounded = bool(np.any(np.isfinite(lb) | np.isfinite(ub)))
        if method == "lm" and bounded:
            raise ValueError("`method` 'lm' only works for unconstrained problems")
        if p0 is None:
            p0 = _feasible_start(lb, ub) if bounded else np.ones(n)
        if np.any((p0 < lb) | (p0 > ub)):
            raise ValueError("`p0` is infeasible: it lies outside `bounds`")
        if not np.all(np.isfinite(p0)):
            raise ValueError("`p0` must be finite")
        # Start strictly inside (the bound maps have zero slope on a bound).
        span = np.where(np.isfinite(ub - lb), ub - lb, np.inf)
        nudge = np.minimum(1e-10 * np.maximum(1, np.abs(p0)), 1e-3 * span)
        p0 = np.where(p0 <= lb, lb + nudge, np.where(p0 >= ub, ub - nudge, p0))
        if m_used < n:
            raise ValueError(
                f"`ydata` has {m_used} usable points, fewer than the {n} parameters"
            )

        # Pad to a size bucket with copies of a real point, masked out.
        size = _bucket(m) if kwargs.get("pad", True) else m
        extra = size - m
        first = int(np.argmax(mask)) if m_used else 0
        pad_x = xdata.ndim >= 1 and xdata.shape[-1] == m
        x = xdata
        if extra:
            mask = np.concatenate([mask, np.zeros(extra, bool)])
            ydata = np.concatenate([ydata, np.full(extra, ydata[first])])
            if pad_x:
                fill = np.repeat(xdata[..., first : first + 1], extra, axis=-1)
                x = np.concatenate([xdata, fill], axis=-1)
        extras = {}
        if sigma is not None:
            sigma = np.asarray(sigma, np.float64)
            if sigma.shape == (m,):
                if np.any(sigma <= 0) or not np.all(np.isfinite(sigma)):
                    raise ValueError("`sigma` must be finite and > 0")
                extras["weight"] = np.concatenate([1 / sigma, np.ones(extra)])
            elif sigma.shape == (m, m):
                try:
                    tril = np.linalg.cholesky(sigma)
                except np.linalg.LinAlgError:
                    raise ValueError(
                        "`sigma` (a covariance) must be positive definite"
                    ) from None
                full = np.eye(size)
                full[:m, :m] = tril
                extras["scale_tril"] = full
            else:
                raise ValueError(
                    f"`sigma` must have shape ({m},) or ({m}, {m}), got {sigma.shape}"
                )
        if extra or not mask.all():
            extras["mask"] = mask
        try:
            out_shape = jax.eval_shape(lambda x, p: f(x, *p), x, p0).shape
        except Exception as error:
            raise ValueError(f"`f` failed on `xdata` and `p0`: {error}") from error
        if math.prod(out_shape) != size:
            raise ValueError(
                f"`f(xdata, *p0)` has shape {out_shape}, but `ydata` has {m} points"
            )
        max_nfev = kwargs.get("max_nfev", kwargs.get("maxfev"))
        if max_nfev is None:
            max_nfev = 100 * (n + 1)
        options = tuple(
            np.float64(v)
            for v in (
                f_scale,
                kwargs.get("ftol", 1e-8),
                kwargs.get("xtol", 1e-8),
                kwargs.get("gtol", 1e-8),
                max_nfev,
                kwargs.get("init_damping", 1e-3),
            )
        )
        chunk_rows = _chunk_rows(kwargs.get("chunk_rows"), f, x, extras, p0)
        out = _fit(
            f,
            loss,
            user_jac,
            full_output,
            chunk_rows,
            x,
            ydata,
            extras,
            p0,
            *((lb, ub) if bounded else (None, None)),
            options,
        )
        out = jax.device_get(out)

    status = int(out["status"])
    if status == -2:
        raise ValueError("Residuals are not finite in the initial point (`p0`)")
    if status <= 0:
        raise RuntimeError("Optimal parameters not found: " + STATUS_MESSAGES[status])
    popt = np.asarray(out["popt"])
    pcov = np.asarray(out["pcov"])
    warn_cov = not bool(out["full_rank"]) or np.isnan(pcov).any()
    if warn_cov:
        pcov = np.full((n, n), np.inf)
    elif not absolute_sigma:
        if m_used > n:
            pcov = pcov * (2 * float(out["cost"]) / (m_used - n))
        else:
            pcov = np.full((n, n), np.inf)
            warn_cov = True
    if warn_cov:
        warnings.warn(
            "Covariance of the parameters could not be estimated",
            OptimizeWarning,
            stacklevel=2,
        )
    if not full_output:
        return popt, pcov
    keep = np.asarray(mask)
    return CurveFitResult(
        popt=popt,
        pcov=pcov,
        perr=np.sqrt(np.diag(pcov)),
        cost=float(out["cost"]),
        nfev=int(out["nfev"]),
        njev=int(out["njev"]),
        status=status,
        message=STATUS_MESSAGES[status],
        success=status > 0,
        fun=np.asarray(out["fun"])[keep],
        jac=np.asarray(out["jac"])[keep],
    )
