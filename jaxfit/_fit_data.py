"""``curve_fit``'s data on its way to the device: what tracing the model told,
padding to size buckets, and row blocks.

The model is traced once per identity and argument shapes (held weakly by
:class:`jaxfit._callables.CallableCache`): a repeated call neither traces
nor evaluates it on the host. Padding (one compiled program per bucket of
lengths) and row blocks change what the model sees, so they are used only
for a model that :mod:`jaxfit._pointwise` proves pointwise; any other is
compiled for the exact length.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from jaxfit import _host_fit as _host
from jaxfit import _pointwise
from jaxfit import _scipy_compat as _args
from jaxfit._callables import CallableCache


def bucket(m: int) -> int:
    """Rounds ``m`` up to one of 8 sizes per octave (at most 12.5% padding)."""
    if m <= 16:
        return 16
    step = 2 ** (m.bit_length() - 4)
    return -(-m // step) * step


# Data of at least this many (padded) points is fitted in row blocks of
# _CHUNK_ROWS when the model is pointwise: a dense Jacobian of a 1e7-point,
# 8-parameter fit alone is 640 MB. From 1e6 points (a 2**20 bucket) the
# blocks, which stay in cache, make repeat fits faster (2 CPU cores: 0.134
# -> 0.096 s with 3 parameters, 0.459 -> 0.287 s with 8) for a first call
# that compiles ~0.35 s longer with 3 (the blocks' scans are extra code) and
# no longer with 8. Buckets this large are multiples of _CHUNK_ROWS.
_CHUNK_FROM = 1 << 20
_CHUNK_ROWS = 1 << 16


class ModelInfo(NamedTuple):
    """What tracing the model (and ``jac``) once for these shapes told."""

    untraceable: str | None  # why it needs concrete values (host fit)
    out_shape: tuple
    pointwise: bool  # padding and row blocks keep each point's value
    jac_shape: tuple | None = None  # of the user's ``jac(xdata, *p0)``


# Per model (and jac) identity and argument shapes; the pointwise verdict
# per shapes other than the number of points (it holds for every number).
_MODEL_INFO = CallableCache()
_POINTWISE = CallableCache()


def model_info(f, jac, x, p0) -> ModelInfo:
    """What tracing ``f`` (and ``jac``) on these arguments tells, cached."""
    static = (_args.describe(x), p0.size)
    info = _MODEL_INFO.get((f, jac), static, lambda f, jac, *_: _trace(f, jac, x, p0))
    if not info.pointwise:
        return info
    # Proven once for every number of points (it is traced symbolically).
    static = (x.shape[:-1], p0.size)
    proof = lambda f, jac, *_: _proof(f, jac, x, p0)
    return info._replace(pointwise=_POINTWISE.get((f, jac), static, proof))


def _trace(f, jac, x, p0) -> ModelInfo:
    """Output shape, or why the model needs concrete values; ``pointwise``
    says only whether the shapes allow padding."""
    shapes = []
    for fn, name in ((f, "f"), (jac, "jac")):
        if fn is None:
            continue
        try:
            out = jax.eval_shape(lambda x, p, fn=fn: fn(x, *p), x, p0)
        except Exception as error:
            if _host.untraceable(error):
                reason = f"`{name}` cannot be traced by JAX ({type(error).__name__})"
                return ModelInfo(reason, (), False)
            error.add_note(f"(raised by `{name}(xdata, *p0)` in jaxfit.curve_fit)")
            raise
        if not hasattr(out, "shape"):
            raise ValueError(f"`{name}(xdata, *p0)` must return one array, got {out}")
        shapes.append(out.shape)
    padded = isinstance(x, np.ndarray) and x.ndim >= 1 and shapes[0] == x.shape[-1:]
    return ModelInfo(None, shapes[0], padded, shapes[1] if jac else None)


def _proof(f, jac, x, p0) -> bool:
    ok = _pointwise.is_pointwise(f, x, p0)
    return ok and (jac is None or _pointwise.is_pointwise(jac, x, p0, out_ndim=2))


def pad(x, y, extras, m):
    """Pads to a size bucket with copies of the first point (the compiled
    fit masks out every row from ``m`` on)."""
    size = bucket(m)
    extra = size - m
    if not extra:
        return x, y, extras
    extras = dict(extras)
    y = np.concatenate([y, np.full(extra, y[0])])
    x = np.concatenate([x, np.repeat(x[..., :1], extra, axis=-1)], axis=-1)
    sigma = extras.get("sigma")
    if sigma is not None and sigma.ndim == 1:
        extras["sigma"] = np.concatenate([sigma, np.ones(extra)])
    elif sigma is not None:  # a covariance: the padding is independent
        full = np.eye(size)
        full[:m, :m] = sigma
        extras["sigma"] = full
    return x, y, extras


def chunk_rows(requested, pointwise, x, extras):
    """Rows per block for the fit (None: the whole Jacobian at once)."""
    size = x.shape[0] if isinstance(x, np.ndarray) and x.ndim == 1 else None
    if requested is not None:  # the user's choice (0 or False: off)
        if not requested:
            return None
        if not pointwise or size is None or _covariance(extras) or size % requested:
            raise ValueError(
                "`chunk_rows` needs a pointwise model, 1-D `xdata`, 1-D `sigma` "
                f"and a divisor of the padded length, got {requested!r}"
            )
        return int(requested)
    if (
        not pointwise
        or size is None
        or size < _CHUNK_FROM
        or size % _CHUNK_ROWS
        or _covariance(extras)
    ):
        return None
    return _CHUNK_ROWS


def _covariance(extras) -> bool:
    """Whether ``sigma`` is a 2-D covariance (its rows are not independent)."""
    sigma = extras.get("sigma")
    return sigma is not None and sigma.ndim == 2
