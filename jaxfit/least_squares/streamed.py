"""Exact Gauss-Newton / Levenberg-Marquardt over data streamed in chunks.

:func:`fit_least_squares` is the least-squares counterpart of
:func:`jaxfit.fit`: instead of a stochastic step per batch, one outer
iteration reads the whole dataset once, in the fixed-shape chunks of
:mod:`jaxfit.data` (arrays, memmaps, ``.npz``, HDF5, iterables), and a
compiled ``lax.scan`` over each chunk's batches accumulates ``J^T J``,
``J^T r`` and the cost of the *full* data. The chunks come from the device
feeder of :func:`jaxfit.fit` (:mod:`jaxfit.feeder`), one epoch per pass. The
step is then the engine's (:mod:`jaxfit.least_squares.steps`: the damped
solve and gain-ratio update of :func:`jaxfit.scale_by_levenberg_marquardt`,
tie-breaking of interchangeable terms included), with its stopping tests and
status table, so the iterates are those of an in-memory fit, up to summation
order, and ``pcov`` is SciPy's for the whole dataset. Memory is ``O(n^2)``
for ``n`` parameters plus two chunks, whatever the number of rows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxfit import _callables, _checks
from jaxfit import data as _data
from jaxfit import residuals as _res
from jaxfit.feeder import Feeder
from jaxfit.least_squares import covariance as _cov
from jaxfit.least_squares import normal_equations as _ne
from jaxfit.least_squares import status as _status
from jaxfit.least_squares import steps as _steps
from jaxfit.least_squares.status import STATUS_MESSAGES

_ITERABLE_CHUNK_BATCHES = 16


class LeastSquaresFitResult(NamedTuple):
    """What :func:`fit_least_squares` returns.

    Attributes:
      params: the fitted params (same pytree structure as the start).
      pcov: covariance of the flattened params (``n x n`` NumPy array), as
        ``scipy.optimize.curve_fit``: ``inf`` where it is undetermined.
      perr: ``sqrt(diag(pcov))``.
      cost: SciPy's cost ``0.5 * sum(rho(r**2))`` over all real rows.
      num_residuals: the residuals fitted (padding excluded).
      iterations: outer iterations (trial steps).
      nfev: full passes evaluating the residuals (cost-only or with ``J``).
      njev: of those, passes that formed ``J^T J``.
      status: as SciPy's ``least_squares`` (1-4 converged, 0 the budget of
        ``max_iterations`` spent), or -3 when Gauss-Newton diverged to a
        non-finite cost (``jaxfit.least_squares.STATUS_MESSAGES``).
      message: ``status`` in words.
      success: ``status > 0``.
      history: per iteration NumPy arrays: ``cost`` (at the base point),
        ``grad_norm``, ``step_norm``, ``ratio``, ``damping``, ``accepted``.
    """

    params: Any
    pcov: np.ndarray
    perr: np.ndarray
    cost: float
    num_residuals: int
    iterations: int
    nfev: int
    njev: int
    status: int
    message: str
    success: bool
    history: dict[str, np.ndarray]


def _masked(residual_fn: Callable, mask: jax.Array) -> Callable:
    """``residual_fn`` with the rows of padding set to exactly zero.

    ``where`` (not a product) also zeroes the Jacobian rows; padding rows are
    copies of real rows, so their derivatives are finite.
    """

    def fn(params, batch):
        r = jnp.reshape(residual_fn(params, batch), (mask.shape[0], -1))
        return jnp.where(mask[:, None], r, 0)

    return fn


# One pair of reducers per residual function (by identity, held weakly: a
# dropped function and what it closes over are freed) and options.
_PASSES = _callables.CallableCache()


def _passes(residual_fn, loss, f_scale, jacobian_mode):
    """Jitted chunk reducers, cached so that a second fit compiles nothing."""
    static = (loss, f_scale, jacobian_mode)
    return _PASSES.get((residual_fn,), static, _build_passes)


def _build_passes(residual_fn, loss, f_scale, jacobian_mode):
    """The reducers of :func:`_passes`.

    ``normal(params, acc, batches, masks)`` adds each batch's
    ``(cost, J^T J, J^T r)`` to ``acc``; ``cost(params, acc, ...)`` adds the
    cost only. All-padding batches (the filler of the last chunk) are skipped.
    """

    def normal_batch(params, batch, mask):
        flat, unravel, flat_fn = _ne.flat_problem(
            _masked(residual_fn, mask), params, batch
        )
        mode = _ne.mode_for(flat, flat_fn, jacobian_mode, None)
        # A dense J^T J is accumulated anyway: wide batches use reverse mode.
        mode = "reverse" if mode == "matrix_free" else mode
        return _ne.normal_equations(
            flat_fn, flat, mode, None, unravel, batch, loss, f_scale
        )

    def cost_batch(params, batch, mask):
        flat, _, flat_fn = _ne.flat_problem(_masked(residual_fn, mask), params, batch)
        return _res.robust_cost(flat_fn(flat), loss, f_scale)

    def reducer(per_batch):
        def run(params, acc, batches, masks):
            def body(acc, xs):
                batch, mask = xs
                zero = jax.tree.map(jnp.zeros_like, acc)
                part = jax.lax.cond(
                    jnp.any(mask),
                    lambda: jax.tree.map(
                        lambda z, v: v.astype(z.dtype),
                        zero,
                        per_batch(params, batch, mask),
                    ),
                    lambda: zero,
                )
                return jax.tree.map(jnp.add, acc, part), None

            return jax.lax.scan(body, acc, (batches, masks))[0]

        return jax.jit(run)

    return reducer(normal_batch), reducer(cost_batch)


def _check_start(cost, m, n, source, batch_size, k):
    """Raises if the data give fewer residuals than params, or the residuals
    at the start are not finite (blaming the data where they hold NaN)."""
    if m < n:
        raise ValueError(f"`data` has {m} residuals, fewer than the {n} parameters")
    if not np.isfinite(float(cost)):
        _check_finite_data(source, batch_size, k)
        raise ValueError("Residuals are not finite at the initial `params`")


def _check_finite_data(source, batch_size, k):
    """Raises naming `data` if it holds NaN or inf (read again: only once the
    residuals at the start are found not finite)."""
    for index, (batches, masks) in enumerate(source.chunks(batch_size, k, None)):
        for leaf in jax.tree.leaves(batches):
            leaf = np.asarray(leaf)[masks] if leaf.ndim >= 2 else leaf
            if np.issubdtype(leaf.dtype, np.inexact) and not np.isfinite(leaf).all():
                raise ValueError(
                    f"`data` contains NaN or inf (in chunk {index} of "
                    f"{batch_size * k} rows): the residuals cannot be finite"
                )


def _judge(method, cost, new_cost, step, normal, damping, scale, nu, x, tols):
    """The engine's judgement of a trial and the stopping tests, in one
    program: ``((actual, predicted, ratio, accepted, damping, nu, status),
    (cost, grad_norm, step_norm))``; ``normal`` is ``(J^T J, J^T r)``."""
    hessian, gradient = normal
    actual, predicted, ratio, accepted, damping, nu = _steps.judge(
        method, cost, new_cost, step, gradient, damping, scale, nu, x, hessian
    )
    grad_norm, step_norm = jnp.max(jnp.abs(gradient)), jnp.linalg.norm(step)
    diverged = ~accepted if method == "gn" else False
    status = _status.stop_status(
        (actual, predicted, ratio), cost, step_norm, jnp.linalg.norm(x),
        grad_norm, tols, diverged=diverged,
    )  # fmt: skip
    return (actual, predicted, ratio, accepted, damping, nu, status), (
        cost,
        grad_norm,
        step_norm,
    )


# The engine's step rules, compiled once (host loop: a pass between steps).
_PROPOSE = {
    method: jax.jit(functools.partial(_steps.propose, method))
    for method in _steps.METHODS
}
_JUDGE = {
    method: jax.jit(functools.partial(_judge, method)) for method in _steps.METHODS
}


def fit_least_squares(
    residual_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    data: Any,
    *,
    batch_size: int | None = None,
    method: str = "lm",
    loss: str = "linear",
    f_scale: float = 1.0,
    max_iterations: int = 100,
    ftol: float = 1e-8,
    xtol: float = 1e-8,
    gtol: float = 1e-8,
    init_damping: float = 1e-3,
    jacobian_mode: str = "auto",
    absolute_sigma: bool = False,
    chunk_batches: int | None = None,
    chunk_bytes: int | None = None,
    progress: bool = True,
) -> LeastSquaresFitResult:
    """Full-data Levenberg-Marquardt or Gauss-Newton over streamed chunks.

    Each pass reads ``data`` once in fixed-shape chunks and a compiled
    ``lax.scan`` accumulates ``J^T J``, ``J^T r`` and the cost over every
    real row (padding rows are masked to zero residuals, so ``residual_fn``
    never sees the mask). ``method='lm'`` then solves the damped normal
    equations, evaluates the trial cost in a cost-only pass and accepts or
    rejects the step by Nielsen's gain-ratio rule, exactly as
    :func:`jaxfit.scale_by_levenberg_marquardt`; an accepted step costs one
    more pass for the new ``J^T J``. ``method='gn'`` takes the minimum-norm
    Gauss-Newton step each pass. Stopping tests are SciPy's
    (``ftol``/``xtol``/``gtol``). Every pass has the same shapes: a fit
    compiles once, and a second fit with the same ``residual_fn`` and shapes
    compiles nothing. Computation follows the dtype of ``params`` (use
    ``jax.enable_x64`` and float64 params for SciPy-level precision).

    Args:
      residual_fn: ``residual_fn(params, batch) -> r`` where ``batch`` is
        what the source yields (a tuple or dict of ``[batch_size, ...]``
        arrays) and ``r`` has ``batch_size`` rows (``[B]`` or ``[B, d]``).
        Include weights (``1 / sigma``) in it.
      params: the starting params (any pytree of float arrays).
      data: as :func:`jaxfit.fit`: arrays (tuple/dict, NumPy, memmap, HDF5
        datasets), an ``.npz``/``.h5`` path, or a re-iterable of batches.
      batch_size: rows per scanned batch (for an iterable, default the first
        batch's size).
      method: ``'lm'`` (Levenberg-Marquardt), ``'gn'`` (Gauss-Newton) or
        ``'tr'`` (a trust region on ``||D d||``, SciPy ``trf``'s update).
      loss, f_scale: robust loss, as :func:`jaxfit.residual_loss`.
      max_iterations: the most outer iterations (trial steps).
      ftol, xtol, gtol: SciPy's tolerances (>= 0).
      init_damping: LM's initial ``lambda`` (> 0).
      jacobian_mode: ``'auto'``, ``'forward'`` or ``'reverse'`` per batch
        (see :func:`jaxfit.jacobian_mode`).
      absolute_sigma: as ``curve_fit``: if False ``pcov`` is scaled by
        ``2 * cost / (m - n)``.
      chunk_batches, chunk_bytes: chunking, as :func:`jaxfit.fit` (for an
        iterable, at most 16 batches per chunk unless ``chunk_batches``).
      progress: show a tqdm bar of iterations with the cost.

    Returns:
      A :class:`LeastSquaresFitResult`.

    Raises:
      ValueError: a bad argument (named), fewer residuals than parameters,
        residuals of the wrong shape, or non-finite residuals at ``params``.

    Example:
      >>> import numpy as np, jax, jax.numpy as jnp, jaxfit
      >>> x = np.linspace(0, 4, 1000)
      >>> y = 2.5 * np.exp(-1.3 * x) + 0.5
      >>> def residual(p, batch):
      ...     x, y = batch
      ...     return p[0] * jnp.exp(-p[1] * x) + p[2] - y
      >>> with jax.enable_x64(True):
      ...     result = jaxfit.fit_least_squares(
      ...         residual, jnp.array([1.0, 1.0, 0.0]), (x, y), batch_size=128,
      ...         progress=False)
      >>> np.asarray(result.params).round(6), result.status > 0
      (array([2.5, 1.3, 0.5]), True)
    """
    _check_options(
        residual_fn, params, method, loss, f_scale, max_iterations,
        (ftol, xtol, gtol), init_damping, jacobian_mode,
    )  # fmt: skip
    source = _data.open_source(data)
    batch_size, example, _, k = _plan(source, batch_size, chunk_batches, chunk_bytes)
    flat, unravel = ravel_pytree(params)
    # One feeder epoch per pass: the first, then at most two per iteration.
    feeder = Feeder(source, batch_size, k, epochs=2 * max_iterations + 1)
    passes = _Passes(
        feeder,
        _passes(residual_fn, loss, float(f_scale), jacobian_mode),
        unravel,
        _rows_per_batch(residual_fn, params, example, batch_size),
        flat,
    )
    bar = None
    try:
        cost, hessian, gradient, norms2 = passes.normal(flat)
        m = passes.num_residuals
        _check_start(cost, m, flat.size, source, batch_size, k)
        bar = _progress_bar(progress, max_iterations)
        x, cost, hessian, counts, history = _iterate(
            passes, flat, (cost, hessian, gradient, norms2), method,
            (ftol, xtol, gtol), init_damping, max_iterations, bar,
        )  # fmt: skip
    finally:
        feeder.close()
        if bar is not None:
            bar.close()
    n = flat.size
    iterations, nfev, njev, status = counts
    cost = float(cost)
    pcov = _pcov(hessian, m, n, cost, absolute_sigma)
    return LeastSquaresFitResult(
        params=unravel(x),
        pcov=pcov,
        perr=np.sqrt(np.diag(pcov)),
        cost=cost,
        num_residuals=m,
        iterations=iterations,
        nfev=nfev,
        njev=njev,
        status=status,
        message=STATUS_MESSAGES[status],
        success=status > 0,
        history={
            name: np.asarray(values, bool if name == "accepted" else None)
            for name, values in history.items()
        },
    )


def _check_options(
    residual_fn, params, method, loss, f_scale, max_iterations, tolerances,
    init_damping, jacobian_mode,
):  # fmt: skip
    if not callable(residual_fn):
        raise ValueError(f"`residual_fn` must be callable, got {residual_fn!r}")
    if method not in _steps.METHODS:
        raise ValueError(f"`method` must be one of {_steps.METHODS!r}, got {method!r}")
    _res._check_loss(loss)
    _checks.positive("f_scale", f_scale)
    _checks.positive_int("max_iterations", max_iterations)
    for name, value in zip(("ftol", "xtol", "gtol"), tolerances, strict=True):
        _checks.non_negative(name, value)
    _checks.positive("init_damping", init_damping)
    if jacobian_mode not in ("auto", "forward", "reverse"):
        raise ValueError(
            "`jacobian_mode` must be 'auto', 'forward' or 'reverse', "
            f"got {jacobian_mode!r}"
        )
    _checks.params(params)


def _plan(source, batch_size, chunk_batches, chunk_bytes):
    """:func:`jaxfit.data.plan` for a source read once per iteration."""
    if getattr(source, "one_shot", False):
        raise ValueError(
            "`data` is a one-shot iterator, but each iteration reads the data "
            "again; pass a re-iterable (e.g. a list or a loader)"
        )
    if chunk_batches is None and isinstance(source, _data.IterableSource):
        chunk_batches = _ITERABLE_CHUNK_BATCHES  # fewer padding batches per pass
    return _data.plan(source, batch_size, chunk_batches, chunk_bytes)


def _rows_per_batch(residual_fn, params, example, batch_size) -> int:
    """Residuals per data row, checked on the example batch (padded)."""
    pad = np.zeros(batch_size - _data._check_rows(example), np.int64)
    example = jax.tree.map(
        lambda x: np.concatenate([np.asarray(x), np.asarray(x)[pad]]), example
    )
    try:
        shape = jax.eval_shape(residual_fn, params, example).shape
    except Exception as error:
        raise ValueError(f"`residual_fn` failed on a batch: {error}") from error
    if len(shape) == 0 or shape[0] != batch_size:
        raise ValueError(
            f"`residual_fn` must return {batch_size} (batch_size) rows of "
            f"residuals, got shape {shape}"
        )
    return math.prod(shape[1:])


class _Passes:
    """One pass over the data at flat params ``x``, one feeder epoch each:
    the normal equations (``normal``) or the cost alone (``cost``)."""

    def __init__(self, feeder, reducers, unravel, per_row, flat):
        self.feeder, self._items = feeder, iter(feeder)
        self.normal_fn, self.cost_fn = reducers
        self.unravel, self.per_row = unravel, per_row
        self.n, self.dtype = flat.size, flat.dtype
        self.rows = None  # real data rows, counted on the first pass

    def _run(self, fn, x, acc):
        p, used = self.unravel(x), None
        real = 0 if self.rows is None else None  # counted on the first pass
        for chunk in self._items:
            if chunk.batches is None:  # the epoch's end: the pass is done
                if used is not None:
                    jax.block_until_ready(used)
                    self.feeder.release()
                if real is not None:
                    self.rows = int(real)
                return acc
            acc = fn(p, acc, chunk.batches, chunk.masks)
            if real is not None:
                real = real + jnp.sum(chunk.masks)
            # A chunk's memory goes back to the reader once the device is
            # done with it: the previous one, while this one is queued.
            if used is not None:
                jax.block_until_ready(used)
                self.feeder.release()
            used = acc
        raise RuntimeError("the feeder ended before the pass")  # never: epochs

    @property
    def num_residuals(self) -> int:
        """Residuals of the real rows (known after the first pass)."""
        return self.rows * self.per_row

    def normal(self, x):
        """``(cost, J^T J, J^T r, column norms2)``."""
        n, dtype = self.n, self.dtype
        acc = (jnp.zeros([], dtype), jnp.zeros((n, n), dtype), jnp.zeros(n, dtype))
        return self._run(self.normal_fn, x, (*acc, jnp.zeros(n, dtype)))

    def cost(self, x):
        return self._run(self.cost_fn, x, jnp.zeros([], self.dtype))


def _progress_bar(progress, max_iterations):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=max_iterations, desc="jaxfit.fit_least_squares")


_HISTORY = ("cost", "grad_norm", "step_norm", "ratio", "damping", "accepted")


def _iterate(passes, x, normal, method, tolerances, init_damping, max_iterations, bar):
    """Steps of ``method`` from ``x`` until a stopping test holds: the final
    ``(x, cost, J^T J, (iterations, nfev, njev, status), history)``.

    LM and the trust region judge their trial on a cost-only pass and form
    the new normal equations only for an accepted step; Gauss-Newton's
    trial pass forms them at once (its step is taken whenever the cost is
    finite).
    """
    cost, hessian, gradient, norms2 = normal
    dtype = x.dtype
    nu, scale = jnp.asarray(2.0, dtype), jnp.zeros(x.size, dtype)
    damping = jnp.asarray(init_damping if method == "lm" else 0.0, dtype)
    if method == "tr":  # the radius
        damping = _steps.initial_radius(x, norms2).astype(dtype)
    history: dict[str, list] = {name: [] for name in _HISTORY}
    status, iterations, nfev, njev = 0, 0, 1, 1
    while iterations < max_iterations:
        iterations += 1
        step, scale = _PROPOSE[method](hessian, gradient, damping, scale, norms2)
        if method != "gn":
            trial = None
            new_cost = passes.cost(x + step)
        else:
            trial = passes.normal(x + step)
            new_cost, njev = trial[0], njev + 1
        nfev += 1
        judged, values = _JUDGE[method](
            cost, new_cost, step, (hessian, gradient), damping, scale, nu, x,
            tolerances,
        )  # fmt: skip
        _, _, ratio, accepted, new_damping, nu, status = judged
        accepted, status = bool(accepted), int(status)
        for name, value in zip(_HISTORY, (*values, ratio, damping), strict=False):
            history[name].append(float(value))
        history["accepted"].append(accepted)
        damping = new_damping
        if accepted:
            x = x + step
            if trial is None:
                trial = passes.normal(x)
                nfev, njev = nfev + 1, njev + 1
            cost, hessian, gradient, norms2 = trial
        if bar is not None:
            bar.update(1)
            bar.set_postfix(cost=f"{float(cost):.6g}")
        if status != _status.RUNNING:
            break
    else:
        status = 0
    return x, cost, hessian, (iterations, nfev, njev, status), history


def _pcov(hessian, m, n, cost, absolute_sigma):
    """SciPy's pcov from the final ``J^T J`` (inf, with SciPy's warning,
    where it cannot be estimated)."""
    pcov, full_rank = jax.device_get(_COVARIANCE(hessian, m))
    return _cov.scipy_pcov(pcov, full_rank, cost, m, n, absolute_sigma, stacklevel=3)


_COVARIANCE = jax.jit(_cov.covariance_from_normal)
