"""A SciPy-compatible ``curve_fit`` on a device-side Levenberg-Marquardt loop.

:func:`curve_fit` runs :func:`least_squares_solve` (``jaxfit.least_squares.solve``: one
``lax.while_loop``, which also backs :func:`least_squares_solve_many`) with
SciPy's argument handling, scoped float64, bounds (a smooth change of
variables), padding of pointwise models to size buckets (one compiled
program per bucket, not per data length) and SciPy's covariance. Its parts:
``_scipy_compat`` (SciPy's arguments, messages and ``pcov`` scaling),
``_fit_data`` (tracing the model once, padding, row blocks), ``_pointwise``
(the proof that padding is safe) and ``_host_fit`` (SciPy's own fit for a
model JAX cannot trace).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit import _fit_data
from jaxfit import _host_fit as _host
from jaxfit import _scipy_compat as _args
from jaxfit import residuals as _res
from jaxfit._callables import CallableCache
from jaxfit._host_fit import SlowPathWarning
from jaxfit._scipy_compat import OptimizeWarning
from jaxfit.least_squares import covariance as _cov
from jaxfit.least_squares import normal_equations as _ne
from jaxfit.least_squares.solve import (
    LeastSquaresSolution,
    least_squares_solve,
    least_squares_solve_many,
)
from jaxfit.least_squares.status import NOT_FINITE_START, STATUS_MESSAGES

# Re-exported: the solver's names, and the warnings curve_fit emits
# (SciPy's OptimizeWarning class when SciPy is installed).
__all__ = [
    "STATUS_MESSAGES",
    "CurveFitResult",
    "LeastSquaresSolution",
    "OptimizeWarning",
    "SlowPathWarning",
    "curve_fit",
    "least_squares_solve",
    "least_squares_solve_many",
]


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


class SolveOptions(NamedTuple):
    """The solver's numeric options: traced, so new values never recompile.

    They travel as one float64 array (one host-to-device transfer instead
    of one per option); ``points`` is the number of real points, the rows
    beyond it being padding.
    """

    f_scale: Any
    ftol: Any
    xtol: Any
    gtol: Any
    max_nfev: Any
    init_damping: Any
    points: Any


def _fit_impl(
    model,
    loss,
    jac,
    with_fun,
    chunk_rows,
    padded,
    method,
    x,
    y,
    extras,
    p0,
    lo,
    hi,
    options,
):
    """The compiled body of ``curve_fit`` (one program per model and bucket).

    ``options`` is a :class:`SolveOptions` packed in one array; where
    ``padded``, rows from ``options.points`` on are masked out. ``method``
    is the engine's (``"lm"``, or ``"tr"`` for the retry). With
    ``chunk_rows`` (a 1-D ``x`` and a pointwise model) the normal equations
    and the covariance's ``R`` are accumulated over row blocks, so no
    ``m x n`` Jacobian is ever formed.
    """
    f_scale, ftol, xtol, gtol, max_nfev, init_damping, points = options
    mask = jnp.arange(y.size) < points if padded else None
    batch = _res.make_batch(x, y, extras.get("sigma"), mask)
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
        method=method,
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

    m = points if padded else y.size
    if chunk_rows is None:
        r, J = residual_and_jac(batch)
        R = jnp.linalg.qr(J, mode="r")
    else:  # TSQR: R of [R; J_block] block by block (the same singular values)
        R = jnp.zeros((popt.size, popt.size), popt.dtype)
        blocks = _ne.row_blocks(batch, chunk_rows)
        qr = lambda R, b: (
            jnp.linalg.qr(jnp.concatenate([R, residual_and_jac(b)[1]]), mode="r"),
            None,
        )
        R = jax.lax.scan(qr, R, blocks)[0]
    pcov, full_rank = _cov.covariance_from_r(R, m)
    # One array to fetch: every fetched leaf costs a device-to-host transfer,
    # which is most of a small repeat call's host time.
    scalars = (sol.cost, sol.nfev, sol.njev, sol.status, full_rank)
    out = {"packed": jnp.concatenate([popt, pcov.ravel(), jnp.stack(scalars)])}
    if with_fun:
        out["fun"], out["jac"] = (
            (r, J) if chunk_rows is None else residual_and_jac(batch)
        )
    return out


_SCALARS = ("cost", "nfev", "njev", "status", "full_rank")


def _unpack(out, n):
    """The program's output by name (see the end of :func:`_fit_impl`), as
    NumPy arrays (``np.asarray`` per leaf: ~1 us, ``jax.device_get`` ~13)."""
    out = {key: np.asarray(value) for key, value in out.items()}
    packed = out.pop("packed")
    out["popt"], out["pcov"] = packed[:n], packed[n : n + n * n].reshape(n, n)
    out.update(zip(_SCALARS, packed[n + n * n :].tolist(), strict=True))
    return out


class CurveFitResult(NamedTuple):
    """``curve_fit(..., return_result=True)``'s result (NumPy arrays).

    ``fun`` and ``jac`` are the weighted residuals and Jacobian (reweighted
    for a robust loss, as SciPy's ``least_squares``) at ``popt``, for the
    points actually fitted (padding and omitted NaNs removed). ``status``
    follows SciPy's ``least_squares``. When the model cannot be traced and
    SciPy fits it on the host, ``jac`` is None and ``njev`` is 0 unless
    SciPy reports them.
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
    jac: np.ndarray | None

    @property
    def params(self) -> np.ndarray:
        """``popt`` under the name every jaxfit result uses."""
        return self.popt


# One compiled program per model (and jac), held weakly: dropping the model
# drops the program and the arrays it closes over; unhashable models work.
_PROGRAMS = CallableCache()


def _compiled_fit(f, jac, loss, with_fun, chunk_rows, padded, method):
    static = (f, loss, jac, with_fun, chunk_rows, padded, method)
    return jax.jit(functools.partial(_fit_impl, *static))


def _solve(f, jac, info, x, y, extras, par, loss, f_scale, kwargs, with_fun):
    """Runs the compiled fit (padded when the model is pointwise)."""
    m, n = y.size, par.p0.size
    if kwargs.get("pad", True) and info.pointwise:
        x, y, extras = _fit_data.pad(x, y, extras, m)
    chunk_rows = _fit_data.chunk_rows(
        kwargs.get("chunk_rows"), info.pointwise, x, extras
    )
    # leastsq's maxfev=0 means the default, as in SciPy.
    budget = kwargs.get("max_nfev") or kwargs.get("maxfev")
    max_nfev = budget or 100 * (n + 1)
    options = SolveOptions(
        f_scale=f_scale,
        ftol=kwargs.get("ftol", 1e-8),
        xtol=kwargs.get("xtol", 1e-8),
        gtol=kwargs.get("gtol", 1e-8),
        max_nfev=max_nfev,
        init_damping=kwargs.get("init_damping", 1e-3),
        points=m,
    )
    static = (loss, with_fun, chunk_rows, y.size != m)
    bounds = (par.lb, par.ub) if par.bounded else (None, None)
    args = (x, y, extras, par.p0, *bounds, np.array(options, np.float64))
    out = _unpack(_PROGRAMS.get((f, jac), (*static, "lm"), _compiled_fit)(*args), n)
    if out["status"] == 0 and not budget:
        out = _retry(f, jac, static, args, out, n)
    if with_fun:  # the fitted points only
        out["fun"], out["jac"] = out["fun"][:m], out["jac"][:m]
    return out


def _retry(f, jac, static, args, lm, n):
    """LM ran out of its default budget: the same fit from ``p0`` by the
    trust region (compiled only now), with as many evaluations again, so
    the two spend SciPy's default for ``curve_fit``, ``200 * (n + 1)``.
    Its result stands, the evaluations of both counted."""
    out = _unpack(_PROGRAMS.get((f, jac), (*static, "tr"), _compiled_fit)(*args), n)
    out["nfev"] += lm["nfev"]
    out["njev"] += lm["njev"]
    return out


def _finish(out, par, m, absolute_sigma, full_output, return_result):
    """SciPy's errors, ``pcov`` and return value from the program's output."""
    status = int(out["status"])
    if status == NOT_FINITE_START:
        raise ValueError(
            "Residuals are not finite in the initial point. (`f(xdata, *p0)`, "
            "`ydata` or `sigma` has NaN or inf)"
        )
    if status <= 0:
        raise RuntimeError("Optimal parameters not found: " + STATUS_MESSAGES[status])
    popt = np.asarray(out["popt"])
    n = par.p0.size
    # SciPy's 'lm' cannot invert a rank-deficient R (inf); 'trf' and
    # 'dogbox' keep the pseudo-inverse.
    full_rank = par.method != "lm" or bool(out["full_rank"])
    pcov = _cov.scipy_pcov(
        out["pcov"], full_rank, out["cost"], m, n, absolute_sigma, stacklevel=3
    )
    if full_output:  # SciPy's keys, then jaxfit's
        info = {"nfev": int(out["nfev"]), "fvec": np.asarray(out["fun"])}
        info.update(njev=int(out["njev"]), cost=float(out["cost"]), jac=out["jac"])
        return popt, pcov, info, STATUS_MESSAGES[status], status
    if not return_result:
        return popt, pcov
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
        fun=np.asarray(out["fun"]),
        jac=np.asarray(out["jac"]),
    )


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
    return_result: bool = False,
    **kwargs: Any,
):
    """Fits ``f(xdata, *params)`` to ``ydata``, as ``scipy.optimize.curve_fit``.

    SciPy's arguments, defaults, return values and exceptions (types and
    texts). Write ``f`` with ``jax.numpy``: the fit runs in float64 inside a
    scoped ``jax.enable_x64`` (the global configuration is left alone), on
    the device, with autodiff Jacobians, and returns NumPy arrays. Every
    method (``lm``, ``trf``, ``dogbox``) runs jaxfit's Levenberg-Marquardt
    loop; bounds are a smooth change of variables. A model proven pointwise
    is padded to one of 8 sizes per octave, so refits of other lengths reuse
    compiled code; any other model sees exactly ``xdata``. A model JAX cannot
    trace (NumPy calls, ``if`` on parameter values) is fitted by SciPy on the
    host, with one :class:`jaxfit.SlowPathWarning`. See ``docs/curve_fit.md``
    ("Switching from SciPy") for the few deliberate differences.

    Args:
      f: the model ``f(x, *params)``; any callable (hashable or not).
      xdata: passed to ``f``: an array (its last axis the points), a pytree of
        arrays, or None.
      ydata: the data, length ``m`` (a scalar broadcasts against ``f``'s
        output, as in SciPy).
      p0: initial parameters; default ones (or a feasible point inside
        ``bounds``), their number taken from ``f``'s signature.
      sigma: None, a scalar or 1-D standard deviations, or a 2-D covariance.
      absolute_sigma: if False, ``pcov`` is scaled by the reduced chi-square.
      check_finite: raise on NaN or inf in the data (default True unless
        ``nan_policy`` is given).
      bounds: ``(lower, upper)`` scalars or length-``n`` sequences, or a
        ``scipy.optimize.Bounds``.
      method: ``None``, ``'lm'``, ``'trf'`` or ``'dogbox'`` (all run jaxfit's
        LM; ``'lm'`` with bounds is an error, as in SciPy).
      jac: None (autodiff), a SciPy string (autodiff is used), or a callable
        ``jac(x, *params)`` returning the ``m x n`` model Jacobian.
      full_output: also return SciPy's ``infodict`` (``nfev``, ``fvec``, and
        jaxfit's ``njev``, ``cost``, ``jac``), ``mesg`` and ``ier``.
      nan_policy: None, ``'raise'`` or ``'omit'`` (drop NaN points, and their
        rows and columns of ``sigma``); ``'propagate'`` is refused, as SciPy.
      loss, f_scale: robust loss as SciPy's ``least_squares``, any method.
      return_result: return a :class:`CurveFitResult` instead (keyword only).
      **kwargs: ``ftol``, ``xtol``, ``gtol`` (default 1e-8), ``max_nfev`` or
        ``maxfev`` (0 or None: the default, SciPy's ``200 * (n + 1)``: LM
        gets half, and if it runs out a trust region retries from ``p0``
        with the other half; a budget given is LM's alone), ``init_damping``,
        ``pad`` (default True), ``chunk_rows`` (default: row blocks of 65536
        from 2**20 points of a pointwise model; 0 turns them off).

    Returns:
      ``(popt, pcov)``; ``(popt, pcov, infodict, mesg, ier)`` with
      ``full_output``; a :class:`CurveFitResult` with ``return_result``.

    Raises:
      ValueError, TypeError: SciPy's, with SciPy's text first, for bad input.
      RuntimeError: "Optimal parameters not found: ..." (``max_nfev`` spent).

    Example:
      >>> import numpy as np, jax.numpy as jnp, jaxfit
      >>> x = np.linspace(0, 4, 50)
      >>> y = 2.5 * np.exp(-1.3 * x) + 0.5
      >>> f = lambda x, a, k, c: a * jnp.exp(-k * x) + c
      >>> popt, pcov = jaxfit.curve_fit(f, x, y, p0=[1.0, 1.0, 0.0])
      >>> popt.round(6)
      array([2.5, 1.3, 0.5])
      >>> res = jaxfit.curve_fit(f, x, y, p0=[1.0, 1.0, 0.0], return_result=True)
      >>> res.success, res.perr.shape
      (True, (3,))
    """
    if not callable(f):
        raise TypeError(f"`f` must be callable, got {f!r}")
    if full_output and return_result:
        raise ValueError(
            "pass `full_output=True` (SciPy's 5-tuple) or `return_result=True` "
            "(a CurveFitResult), not both"
        )
    _args.check_options(method, nan_policy, jac, loss, f_scale, kwargs)
    call = dict(
        xdata=xdata,
        ydata=ydata,
        p0=p0,
        sigma=sigma,
        absolute_sigma=absolute_sigma,
        check_finite=check_finite,
        bounds=bounds,
        method=method,
        jac=jac,
        full_output=full_output,
        nan_policy=nan_policy,
    )
    user_jac = jac if callable(jac) else None
    with jax.enable_x64(True):
        x, y, sigma, x_ok = _args.prepare_data(
            xdata, ydata, sigma, check_finite, nan_policy
        )
        par = _args.prepare_params(f, p0, bounds, method)
        info = (
            _fit_data.model_info(f, user_jac, x, par.p0)
            if x_ok
            else _fit_data.ModelInfo("`xdata` holds values JAX cannot take", (), False)
        )
        if info.untraceable:
            options = _host.HostOptions(loss, f_scale, return_result, kwargs)
            return _host.fit(
                f, call, par.bounded, info.untraceable, options, CurveFitResult
            )
        _args.device_only_check(kwargs)
        y_size = y.size
        y = _args.broadcast_y(y, info.out_shape)
        m, n = y.size, par.p0.size
        _args.check_points(m, n, y_size, par.method)
        _args.check_jac_shape(info.jac_shape, m, n)
        extras = {"sigma": _args.check_sigma(sigma, m)}
        with_fun = full_output or return_result
        out = _solve(
            f, user_jac, info, x, y, extras, par, loss, f_scale, kwargs, with_fun
        )
    return _finish(out, par, m, absolute_sigma, full_output, return_result)
