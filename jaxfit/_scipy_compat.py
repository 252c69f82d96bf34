"""``curve_fit``'s arguments and covariance, as SciPy 1.17 handles them.

Each error has SciPy's type and begins with SciPy's text (so code that
matches SciPy's messages keeps working); jaxfit's more precise wording,
naming the argument, follows it. Read beside ``curve_fit`` in
``scipy/optimize/_minpack_py.py``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxfit import _checks
from jaxfit import residuals as _res
from jaxfit._callables import CallableCache

try:  # SciPy users filter SciPy's warning class; keep it when SciPy exists.
    from scipy.optimize import Bounds, OptimizeWarning
except ImportError:  # pragma: no cover
    Bounds = None

    class OptimizeWarning(UserWarning):
        """The covariance of the parameters could not be estimated."""


# Options of jaxfit's LM beside SciPy's tolerances and budget.
JAXFIT_OPTIONS = ("init_damping", "pad", "chunk_rows")
SCIPY_OPTIONS = ("ftol", "xtol", "gtol", "max_nfev", "maxfev")
# SciPy options that jaxfit's LM cannot honour, with the reason. They reach
# SciPy when the model runs on the host (see ``jaxfit._host_fit``).
SCIPY_ONLY = {
    "x_scale": "LM scales by the running maximum of diag(J^T J), as "
    "x_scale='jac'; rescale badly scaled parameters inside `f`",
    "diff_step": "Jacobians come from autodiff, not finite differences",
    "epsfcn": "Jacobians come from autodiff, not finite differences",
    "factor": "use `init_damping` for the initial LM damping",
    "diag": "LM scales by the running maximum of diag(J^T J)",
    "col_deriv": "a callable `jac` returns the m x n Jacobian",
    "tr_solver": "wide problems switch to a matrix-free solve by themselves",
    "tr_options": "wide problems switch to a matrix-free solve by themselves",
    "jac_sparsity": "Jacobians come from autodiff",
    "verbose": "the fit runs in one compiled loop on the device",
    "callback": "the fit runs in one compiled loop on the device",
    "workers": "the fit runs in one compiled loop on the device",
    "kwargs": "close over extra arguments in `f`",
}
METHODS = (None, "lm", "trf", "dogbox")
NAN_POLICIES = (None, "raise", "omit", "propagate")
JAC_STRINGS = ("2-point", "3-point", "cs")


class Params(NamedTuple):
    """Checked parameters: ``p0`` strictly inside finite ``(lb, ub)``."""

    p0: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    bounded: bool
    method: str  # SciPy's resolved method: 'lm' unbounded, else 'trf'


def check_options(method, nan_policy, jac, loss, f_scale, kwargs) -> None:
    """The arguments that do not depend on the data, in SciPy's words."""
    if "args" in kwargs:
        raise ValueError("'args' is not a supported keyword argument.")
    for key in kwargs:
        if key not in (*SCIPY_OPTIONS, *JAXFIT_OPTIONS, *SCIPY_ONLY):
            # SciPy passes it on to leastsq/least_squares: Python's TypeError.
            raise TypeError(f"curve_fit() got an unexpected keyword argument {key!r}")
    if method not in METHODS:
        raise ValueError(
            f"`method` must be 'trf', 'dogbox' or 'lm'. Got `method`={method!r} "
            "(None picks 'lm', or 'trf' with bounds)."
        )
    if nan_policy not in NAN_POLICIES:
        raise ValueError(
            "nan_policy must be one of {None, 'raise', 'omit'}. "
            f"Got `nan_policy`={nan_policy!r}."
        )
    if jac is not None and not callable(jac) and jac not in JAC_STRINGS:
        raise ValueError(
            f"`jac` must be '2-point', '3-point', 'cs' or callable. Got `jac`={jac!r}."
        )
    if loss not in _res.LOSSES:
        raise ValueError(
            f"`loss` must be one of {dict.fromkeys(_res.LOSSES).keys()} or a "
            f"callable. Got `loss`={loss!r} (jaxfit takes the names only)."
        )
    if not (np.isscalar(f_scale) and 0 < f_scale < np.inf):
        raise ValueError(f"`f_scale` must be finite and > 0, got {f_scale!r}")
    # SciPy lets NaN and negative tolerances through (they silently turn the
    # test off); a traced value (a vmapped solve) cannot be checked.
    for key in ("ftol", "xtol", "gtol"):
        if key in kwargs:
            _checks.non_negative(key, kwargs[key])
    if "init_damping" in kwargs:
        _checks.positive("init_damping", kwargs["init_damping"])
    for key in ("max_nfev", "maxfev"):
        value = kwargs.get(key)
        # leastsq's maxfev=0 means its default; least_squares wants > 0.
        if value is not None and (value < 0 or (value == 0 and key == "max_nfev")):
            raise ValueError(
                f"`max_nfev` must be None or positive integer. Got `{key}`={value!r}."
            )


def check_jac_shape(jac_shape, m: int, n: int) -> None:
    """The user's ``jac`` returns the ``m x n`` model Jacobian."""
    if jac_shape is not None and math.prod(jac_shape) != m * n:
        raise ValueError(
            f"`jac(xdata, *p0)` must return the ({m}, {n}) Jacobian of the model "
            f"(its {m} points by the {n} parameters), got shape {jac_shape}"
        )


def device_only_check(kwargs) -> None:
    """Refuses SciPy options jaxfit's LM cannot honour (after tracing)."""
    for key in kwargs:
        if key in SCIPY_ONLY:
            raise ValueError(
                f"`{key}` is not supported by jaxfit's curve_fit: {SCIPY_ONLY[key]}"
            )


def _float_array(a, check_finite: bool, name: str) -> np.ndarray:
    if not check_finite:
        return np.asarray(a, float)
    try:
        return np.asarray_chkfinite(a, float)
    except ValueError as error:
        if "infs or NaNs" not in str(error):
            raise
        raise ValueError(
            f"array must not contain infs or NaNs: `{name}` contains NaN or inf "
            "(pass nan_policy='omit' to drop NaN points)"
        ) from None


def _as_x(xdata, check_finite: bool):
    """``xdata`` as the model will see it, and whether it can be traced.

    SciPy converts a list, tuple or ndarray to a float array and passes
    anything else to ``f`` as it is. jaxfit converts other arrays (JAX's,
    scalars) too, and each leaf of a pytree (a dict of arrays); what does
    not convert (strings, objects only ``f`` understands) cannot enter a
    compiled program, and the fit runs on the host, in SciPy.
    """
    if xdata is None:
        return None, True
    try:
        if isinstance(xdata, list | tuple | np.ndarray) or hasattr(xdata, "__array__"):
            x = np.asarray(xdata, float)
        else:
            x = jax.tree.map(lambda a: np.asarray(a, float), xdata)
    except (TypeError, ValueError):
        return xdata, False
    if check_finite and not all(np.isfinite(a).all() for a in jax.tree.leaves(x)):
        raise ValueError(
            "array must not contain infs or NaNs: `xdata` contains NaN or inf "
            "(pass nan_policy='omit' to drop NaN points)"
        )
    return x, True


def _has_nan(a) -> np.ndarray:
    nan = np.isnan(a)
    return nan.any(axis=tuple(range(nan.ndim - 1))) if nan.ndim > 1 else nan


def prepare_data(xdata, ydata, sigma, check_finite, nan_policy):
    """``(x, y, sigma, x_traceable)``: converted, checked, NaNs omitted.

    ``y`` is 1-D (a 2-D ``ydata`` is flattened, jaxfit's leniency) or 0-d
    (a scalar broadcast against ``f``'s output, as SciPy).
    """
    if check_finite is None:
        check_finite = nan_policy is None
    y = _float_array(ydata, check_finite, "ydata")
    if y.ndim > 1:
        y = y.ravel()
    x, x_traceable = _as_x(xdata, check_finite)
    if y.size == 0:
        raise ValueError("`ydata` must not be empty!")
    # SciPy: the policy is read only when the data are not checked already.
    if check_finite or nan_policy is None:
        return x, y, sigma, x_traceable
    if nan_policy == "propagate":
        raise ValueError(
            "`nan_policy='propagate'` is not supported by this function. "
            "(NaN residuals cannot be fitted: use 'omit' to drop NaN points or "
            "'raise'.)"
        )
    x_nan = _has_nan(x) if isinstance(x, np.ndarray) and x.ndim else None
    y_nan = np.isnan(y)
    x_any = x_nan is not None and bool(x_nan.any())
    if nan_policy == "raise":
        if x_any or y_nan.any():
            name = "ydata" if y_nan.any() else "xdata"
            raise ValueError(f"The input contains nan values (in `{name}`)")
        return x, y, sigma, x_traceable
    aligned = x_nan is not None and x_nan.shape == y.shape
    if x_any and not aligned:
        raise ValueError(
            f"nan_policy='omit' needs `xdata` with its last axis of {y.size} "
            f"points like `ydata`, got shape {np.shape(x)}"
        )
    drop = x_nan | y_nan if aligned else y_nan
    if not drop.any():
        return x, y, sigma, x_traceable
    if y.ndim == 0 or drop.all():
        raise ValueError("`ydata` must not be empty! (every point is NaN)")
    keep = ~drop
    if aligned:
        x = x[..., keep]
    y = y[keep]
    if sigma is not None:
        sigma = np.asarray(sigma)
        if sigma.ndim == 1:
            sigma = sigma[keep]
        elif sigma.ndim == 2:
            sigma = sigma[keep][:, keep]
    return x, y, sigma, x_traceable


# Per model identity: a repeat call inspects no signature (~15 us each).
_PARAM_COUNTS = CallableCache()


def n_params_of(f) -> tuple[int, int] | None:
    """``f``'s (required, positional) parameter counts after ``x``."""
    return _PARAM_COUNTS.get((f,), (), _count_params)


def _count_params(f) -> tuple[int, int] | None:
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


def _no_bounds(bounds) -> bool:
    """Whether ``bounds`` is SciPy's default ``(-inf, inf)`` (as scalars)."""
    return (
        isinstance(bounds, tuple | list)
        and len(bounds) == 2
        and all(type(b) in (float, int) for b in bounds)
        and bounds[0] == -math.inf
        and bounds[1] == math.inf
    )


def _bounds(bounds, n):
    if _no_bounds(bounds):  # the common case, without NumPy's small-array ops
        return np.full(n, -np.inf), np.full(n, np.inf)
    if Bounds is not None and isinstance(bounds, Bounds):
        bounds = (bounds.lb, bounds.ub)
    lb, ub = (np.asarray(b, float) for b in bounds)
    if np.isnan(lb).any() or np.isnan(ub).any():
        raise ValueError("`bounds` must not contain NaN (use -inf or inf for none)")
    try:
        return tuple(np.broadcast_to(b, (n,)).astype(float) for b in (lb, ub))
    except ValueError:
        raise ValueError(
            "Inconsistent shapes between bounds and `x0`. "
            f"`bounds` must be scalars or have n={n} values, got shapes "
            f"{lb.shape} and {ub.shape}"
        ) from None


def prepare_params(f, p0, bounds, method) -> Params:
    """``p0`` (default: SciPy's), bounds and the resolved method."""
    counts = n_params_of(f)
    if p0 is None:
        # SciPy counts every positional argument after x, defaults included.
        if counts is None or counts[1] < 1:
            raise ValueError(
                "Unable to determine number of fit parameters. "
                "Pass `p0` (the signature of `f` does not tell it)."
            )
        n = counts[1]
    else:
        p0 = np.atleast_1d(np.asarray(p0, float))
        if p0.ndim != 1:
            raise ValueError(f"`p0` must be 1-D, got shape {p0.shape}")
        n = p0.size
        if counts is not None and not counts[0] <= n <= counts[1]:
            # SciPy's call f(x, *p0) fails with Python's TypeError.
            raise TypeError(f"`p0` has {n} values but `f` takes {counts[0]} parameters")
    lb, ub = _bounds(bounds, n)
    bounded = bool(np.isfinite(lb).any() or np.isfinite(ub).any())
    if p0 is None:
        p0 = _feasible_start(lb, ub)
    resolved = method or ("trf" if bounded else "lm")
    if resolved == "lm" and bounded:
        raise ValueError(
            "Method 'lm' only works for unconstrained problems. "
            "Use 'trf' or 'dogbox' instead."
        )
    if not bounded:
        if not np.isfinite(p0).all():
            raise ValueError("`p0` must be finite")
        return Params(p0, lb, ub, bounded, resolved)
    if np.any(lb >= ub):
        raise ValueError(
            "Each lower bound must be strictly less than each upper bound. "
            "(in `bounds`)"
        )
    if np.any((p0 < lb) | (p0 > ub)):
        raise ValueError(
            "Initial guess is outside of provided bounds "
            f"(`p0`={p0.tolist()} with `bounds`)"
        )
    if not np.all(np.isfinite(p0)):
        raise ValueError("`p0` must be finite")
    # Start strictly inside (the bound maps have zero slope on a bound).
    span = np.where(np.isfinite(ub - lb), ub - lb, np.inf)
    nudge = np.minimum(1e-10 * np.maximum(1, np.abs(p0)), 1e-3 * span)
    p0 = np.where(p0 <= lb, lb + nudge, np.where(p0 >= ub, ub - nudge, p0))
    return Params(p0, lb, ub, bounded, resolved)


def check_points(m: int, n: int, y_size: int, method: str) -> None:
    """SciPy's 'lm' refuses fewer residuals than parameters (trf does not)."""
    if method != "lm" or n <= m:
        return
    if y_size != 1:
        raise TypeError(
            f"The number of func parameters={n} must not exceed the number of "
            f"data points={m} (`ydata` has {m} usable points, `p0` {n} values)"
        )
    raise TypeError(
        f"Improper input: func input vector length N={n} must not exceed func "
        f"output vector length M={m}"
    )


def check_sigma(sigma, m: int) -> np.ndarray | None:
    """``sigma`` as :func:`jaxfit.make_batch` takes it: None, ``m``
    standard deviations (a scalar broadcast), or an ``m x m`` covariance,
    checked here with SciPy's messages (before anything compiles; the
    Cholesky factor the program whitens with is recomputed there)."""
    if sigma is None:
        return None
    sigma = np.asarray(sigma, float)
    if sigma.size == 1 or sigma.shape == (m,):
        if not np.all(np.isfinite(sigma)) or np.any(sigma == 0):
            raise ValueError("`sigma` must be finite and non-zero")
        return np.broadcast_to(sigma.ravel(), (m,)).copy()
    if sigma.shape == (m, m):
        if not np.all(np.isfinite(sigma)):
            raise ValueError(
                "`sigma` (a 2-D covariance of `ydata`) contains NaN or inf"
            )
        try:
            positive_definite = np.isfinite(np.linalg.cholesky(sigma)).all()
        except np.linalg.LinAlgError:
            positive_definite = False
        if not positive_definite:
            raise ValueError(
                "`sigma` must be positive definite. (a 2-D `sigma` is the "
                "covariance of `ydata`)"
            )
        return sigma
    raise ValueError(
        f"`sigma` has incorrect shape. Expected ({m},), ({m}, {m}) or a "
        f"scalar, got {sigma.shape}"
    )


def broadcast_y(y: np.ndarray, out_shape: tuple) -> np.ndarray:
    """``ydata`` as the residual ``f(xdata, *p) - ydata`` sees it (1-D)."""
    size = math.prod(out_shape)
    if size == y.size:  # equal sizes are flattened alike (jaxfit's leniency)
        return y.reshape(-1)
    try:
        shape = np.broadcast_shapes(out_shape, y.shape)
    except ValueError:
        shape = None
    if shape is None or len(shape) > 1:
        raise ValueError(
            f"operands could not be broadcast together: `f(xdata, *p0)` has "
            f"shape {out_shape} and `ydata` has shape {y.shape} (check `xdata`)"
        )
    return np.broadcast_to(y, shape).reshape(-1).copy()


def describe(x: Any):
    """A hashable description of ``x``'s structure, shapes and dtypes."""
    if isinstance(x, np.ndarray):  # the common case, without a tree walk
        return x.shape, x.dtype.str
    leaves, tree = jax.tree.flatten(x)
    return tree, tuple((np.shape(a), np.result_type(a).str) for a in leaves)
