"""``curve_fit`` for a model JAX cannot trace: SciPy's fit, on the host.

A model written with NumPy (``np.exp``) or with Python logic on parameter
values (``if a > 0:``) cannot run inside a compiled program. Rather than
fail, ``curve_fit`` hands the call to ``scipy.optimize.curve_fit`` (JAX
depends on SciPy), so the fit is SciPy's, number for number, with one
:class:`SlowPathWarning` saying how to make it fast. A genuine error in a
JAX model (a shape error, a ``NameError``) is not a reason to fall back and
propagates unchanged.
"""

from __future__ import annotations

import re
import warnings
from typing import NamedTuple

import jax
import numpy as np

from jaxfit import residuals as _res

# Errors that mean "this function needs concrete values" when it is traced.
_TRACER_ERRORS = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)
# NumPy refusing a tracer it holds as an object: "loop of ufunc does not
# support argument 0 of type DynamicJaxprTracer which has no callable exp".
_NUMPY_REFUSAL = re.compile(r"argument \d+ of type \w*Tracer")
# MINPACK's leastsq codes as SciPy's least_squares status (SciPy's own map).
_FROM_MINPACK = {0: -1, 1: 2, 2: 3, 3: 4, 4: 1, 5: 0}


class SlowPathWarning(UserWarning):
    """``curve_fit`` ran a model JAX cannot trace on the host, through SciPy.

    The fit is SciPy's (finite-difference Jacobians, no compilation, NumPy
    speed). Write the model with ``jax.numpy`` and ``jnp.where`` instead of
    ``if`` on parameter values to get autodiff Jacobians and a compiled fit.
    Silence it with ``warnings.simplefilter('ignore', jaxfit.SlowPathWarning)``.

    Example:
      >>> import warnings, numpy as np, jaxfit
      >>> f = lambda x, a: a * np.exp(-x)  # NumPy: JAX cannot trace it
      >>> x = np.arange(5.0)
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     popt, pcov = jaxfit.curve_fit(f, x, 2 * np.exp(-x))
      >>> popt.round(6), caught[0].category is jaxfit.SlowPathWarning
      (array([2.]), True)
    """


def untraceable(error: BaseException) -> bool:
    """Whether ``error``, raised while tracing, means "needs concrete values"."""
    if isinstance(error, _TRACER_ERRORS):
        return True
    return isinstance(error, TypeError) and bool(_NUMPY_REFUSAL.search(str(error)))


class HostOptions(NamedTuple):
    """jaxfit's own arguments that the host fit translates for SciPy."""

    loss: str
    f_scale: float
    return_result: bool
    kwargs: dict


def fit(f, call, bounded, reason, options, result_type):
    """SciPy's ``curve_fit`` on the user's own arguments, with one warning.

    ``call`` holds the arguments SciPy takes (as the user passed them);
    ``options`` (:class:`HostOptions`) jaxfit's ``loss``, ``f_scale``,
    ``return_result`` and its other keywords, made SciPy's by
    :func:`scipy_options`.
    """
    import scipy.optimize

    warnings.warn(
        f"curve_fit: {reason}, so it is fitted on the host by "
        "scipy.optimize.curve_fit (the slow path: finite differences, no "
        "compilation). Write the model with jax.numpy (jnp.where instead of "
        "`if` on parameter values) to get autodiff Jacobians and a compiled fit.",
        SlowPathWarning,
        stacklevel=3,  # the user's call of jaxfit.curve_fit
    )
    loss, f_scale = options.loss, options.f_scale
    method, resolved, kwargs = scipy_options(
        options.kwargs, call.pop("method"), bounded, loss, f_scale
    )
    if options.return_result:
        call["full_output"] = True
    with jax.enable_x64(True):  # a jax.numpy piece of the model in float64
        out = scipy.optimize.curve_fit(f, method=method, **call, **kwargs)
    if not options.return_result:
        return out
    return result_from_scipy(out, resolved, loss, f_scale, result_type)


def scipy_options(kwargs, method, bounded, loss, f_scale):
    """``(method, resolved method, kwargs)`` in SciPy's spellings.

    SciPy's 'lm' (its default without bounds) takes ``maxfev`` and no
    robust loss; 'trf' takes ``max_nfev``. jaxfit takes either for any
    method, so they are renamed for the method SciPy will run.
    """
    kwargs = dict(kwargs)
    if "init_damping" in kwargs:
        raise ValueError(
            "`init_damping` needs jaxfit's LM: it is not available when the "
            "model cannot be traced and SciPy fits it (write `f` with jax.numpy)"
        )
    for key in ("pad", "chunk_rows"):  # they shape compiled programs: none here
        kwargs.pop(key, None)
    if loss != "linear" or f_scale != 1.0:
        if method == "lm":
            raise ValueError(
                "method='lm' supports only 'linear' loss function. (SciPy fits "
                "this model, as it cannot be traced: use method='trf')"
            )
        method = method or "trf"
        kwargs.update(loss=loss, f_scale=f_scale)
    resolved = method or ("trf" if bounded else "lm")
    # maxfev=0 is leastsq's "default"; jaxfit reads it so for every method.
    budget = kwargs.pop("max_nfev", None) or kwargs.pop("maxfev", None)
    kwargs.pop("maxfev", None)
    if budget:
        kwargs["maxfev" if resolved == "lm" else "max_nfev"] = budget
    return method, resolved, kwargs


def result_from_scipy(out, resolved, loss, f_scale, result_type):
    """A ``CurveFitResult`` from SciPy's ``full_output`` 5-tuple."""
    popt, pcov, info, mesg, ier = out
    fvec = np.asarray(info["fvec"])
    status = _FROM_MINPACK.get(ier, ier) if resolved == "lm" else ier
    with jax.enable_x64(True):
        cost = float(_res.robust_cost(fvec, loss, f_scale))
    return result_type(
        popt=popt,
        pcov=pcov,
        perr=np.sqrt(np.diag(pcov)),
        cost=cost,
        nfev=int(info["nfev"]),
        njev=int(info.get("njev", 0)),
        status=int(status),
        message=mesg,
        success=int(status) > 0,
        fun=fvec,
        jac=None,
    )
