"""Pieces shared by the backtracking and zoom line searches."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxfit import _checks

SAFEGUARDS = ("negative_gradient", "skip")
# A non-finite trial moves the next one ten times closer to the last finite
# point: overflow usually means the step is orders of magnitude too long.
NONFINITE_SHRINK = 0.1


class LinesearchInfo(NamedTuple):
    """What the last line search did, for monitoring (all 0-d arrays).

    Attributes:
      num_evaluations: int32, calls of ``value_fn`` in the last update (also
        readable as ``num_linesearch_steps``, Optax's name).
      total_evaluations: int32, calls of ``value_fn`` in all updates so far.
      conditions_met: bool, the accepted step satisfies Armijo (backtracking)
        or the strong Wolfe conditions (zoom).
      descent_direction: bool, the incoming ``updates`` were a descent
        direction (or the gradient was zero); False means the safeguard acted.
      nonfinite: bool, a trial value or slope was NaN or infinite.
      decrease_error: how much the last trial missed sufficient decrease by
        (0 when met, inf when non-finite).
      curvature_error: how much the last trial missed the curvature condition
        by (zoom only; 0 for backtracking).
    """

    num_evaluations: jax.Array
    total_evaluations: jax.Array
    conditions_met: jax.Array
    descent_direction: jax.Array
    nonfinite: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array

    @property
    def num_linesearch_steps(self) -> jax.Array:
        """Optax's name for ``num_evaluations``."""
        return self.num_evaluations


def scalar_dtype(params: Any) -> Any:
    """The real dtype of step sizes and values: the params', at least f32."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("`params` must hold at least one array for a line search")
    dtype = jnp.finfo(jnp.result_type(*leaves)).dtype  # real part of complex
    if dtype.itemsize < 4:  # step sizes in bfloat16 would lose the search
        dtype = jnp.dtype(jnp.float32)
    return jax.dtypes.canonicalize_dtype(dtype)


def as_state_array(value: Any, dtype: Any) -> jax.Array:
    """A state field as a 0-d array of ``dtype``.

    ``optax.tree.set(state, learning_rate=1.0)`` leaves a Python float in the
    state; reading every field through this keeps the update's avals fixed.
    """
    return jnp.asarray(value).reshape(()).astype(dtype)


def init_info(dtype: Any) -> LinesearchInfo:
    return LinesearchInfo(
        num_evaluations=jnp.zeros([], jnp.int32),
        total_evaluations=jnp.zeros([], jnp.int32),
        conditions_met=jnp.zeros([], bool),
        descent_direction=jnp.ones([], bool),
        nonfinite=jnp.zeros([], bool),
        decrease_error=jnp.full([], jnp.inf, dtype),
        curvature_error=jnp.full([], jnp.inf, dtype),
    )


def value_fn_kwargs(value_fn: Callable, extra_args: dict[str, Any]) -> dict:
    """The extra arguments that ``value_fn``'s signature accepts by keyword.

    The first positional parameter receives the params and is never filled
    from ``extra_args``; ``**kwargs`` accepts everything. A signature that
    cannot be inspected accepts nothing.
    """
    if not extra_args:
        return {}
    try:
        parameters = list(inspect.signature(value_fn).parameters.values())
    except (TypeError, ValueError):
        return {}
    kind = inspect.Parameter
    positional = (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)
    first = next((p for p in parameters if p.kind in positional), None)
    if any(p.kind == kind.VAR_KEYWORD for p in parameters):
        names = set(extra_args)
    else:
        names = {
            p.name
            for p in parameters
            if p.kind in (kind.POSITIONAL_OR_KEYWORD, kind.KEYWORD_ONLY)
        }
    if first is not None:
        names.discard(first.name)
    return {key: value for key, value in extra_args.items() if key in names}


def objective(
    value_fn: Callable, extra_args: dict, has_aux: bool, dtype: Any
) -> Callable[[Any], jax.Array]:
    """``params -> value`` as a 0-d array of ``dtype``, aux dropped."""
    if not callable(value_fn):
        raise TypeError(f"`value_fn` must be callable, got {value_fn!r}")
    kwargs = value_fn_kwargs(value_fn, extra_args)

    def fn(params):
        out = value_fn(params, **kwargs)
        if has_aux:
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TypeError(
                    "with has_aux=True, `value_fn` must return (value, aux); "
                    f"got {type(out).__name__}"
                )
            out = out[0]
        elif isinstance(out, (tuple, list)):
            raise TypeError(
                "`value_fn` returned a tuple; if it is (value, aux), construct "
                "the line search with has_aux=True"
            )
        return as_scalar("the output of `value_fn`", out, dtype)

    return fn


def as_scalar(what: str, value: Any, dtype: Any) -> jax.Array:
    value = jnp.asarray(value)
    if value.size != 1:
        raise TypeError(f"{what} must be a scalar, got shape {value.shape}")
    if jnp.iscomplexobj(value):
        raise TypeError(f"{what} must be real, got dtype {value.dtype}")
    return value.reshape(()).astype(dtype)


def _real_dot(a: Any, b: Any, dtype: Any) -> jax.Array:
    """``Re sum(a * b)`` over two trees, accumulated in ``dtype``."""

    def leaf(x, y):
        if jnp.iscomplexobj(x) or jnp.iscomplexobj(y):
            real = jnp.real(x).astype(dtype) * jnp.real(y).astype(dtype)
            return jnp.sum(real - jnp.imag(x).astype(dtype) * jnp.imag(y).astype(dtype))
        return jnp.sum(x.astype(dtype) * y.astype(dtype))

    terms = [
        leaf(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return sum(terms, jnp.zeros([], dtype))


def slope(grad: Any, direction: Any, dtype: Any) -> jax.Array:
    """Slope of ``t -> f(params + t * direction)`` from an Optax-style ``grad``.

    Optax's convention for complex params: the ``grad`` passed to ``update``
    is ``conj(jax.grad(f))``, so that ``-grad`` descends (Optax's own tests
    and docs conjugate before calling ``update``). The slope is then
    ``Re <grad, direction> = Re sum(conj(grad) * direction)``, which is
    ``sum(grad * direction)`` for real params.
    """
    return _real_dot(jax.tree.map(jnp.conj, grad), direction, dtype)


def slope_from_jax_grad(jax_grad: Any, direction: Any, dtype: Any) -> jax.Array:
    """The same slope from ``jax.grad(f)`` itself (a trial's gradient)."""
    return _real_dot(jax_grad, direction, dtype)


def norm(tree: Any, dtype: Any) -> jax.Array:
    squares = [
        jnp.sum(jnp.square(jnp.abs(x).astype(dtype))) for x in jax.tree.leaves(tree)
    ]
    return jnp.sqrt(sum(squares, jnp.zeros([], dtype)))


def descent_direction(updates, grad, dtype, safeguard):
    """Returns ``(direction, slope, searchable, descent, stationary)``.

    A non-descent direction (``slope >= 0`` or non-finite) is replaced by the
    negative gradient rescaled to the direction's norm, so the search starts
    at a step of the same length, or (``skip``) not searched at all. The
    norms are computed only then (a ``cond``): the usual case costs one dot.
    ``grad`` follows Optax's convention, so ``-grad`` is the steepest descent
    direction for complex params too.
    """
    s0 = slope(grad, updates, dtype)
    descent = s0 < 0  # False for NaN

    def keep():
        return updates, s0, jnp.zeros([], bool)

    def fall_back():
        grad_norm = norm(grad, dtype)
        stationary = grad_norm == 0
        if safeguard == "skip":
            return updates, s0, stationary
        updates_norm = norm(updates, dtype)
        rescale = (
            jnp.isfinite(updates_norm) & (updates_norm > 0) & jnp.isfinite(grad_norm)
        )
        factor = jnp.where(rescale, updates_norm / grad_norm, 1)
        factor = jnp.where(stationary, 0, factor)
        direction = jax.tree.map(
            lambda u, g: -(factor.astype(g.dtype) * g).astype(u.dtype),
            updates,
            grad,
        )
        # -factor * |g|^2, written so that it does not overflow.
        fallback_slope = -jnp.where(rescale, updates_norm * grad_norm, grad_norm**2)
        return direction, fallback_slope.astype(dtype), stationary

    direction, s0, stationary = jax.lax.cond(descent, keep, fall_back)
    searchable = s0 < 0 if safeguard == "negative_gradient" else descent
    return direction, s0, searchable, descent | stationary, stationary


def step_along(params, step, direction):
    return jax.tree.map(
        lambda p, d: (p + step.astype(d.dtype) * d).astype(p.dtype), params, direction
    )


def scaled(step, direction):
    """``step * direction``, exactly zero when no step is taken (no NaN leak)."""
    return jax.tree.map(
        lambda d: jnp.where(step > 0, step.astype(d.dtype) * d, jnp.zeros_like(d)),
        direction,
    )


def tree_select(pred, on_true, on_false):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def report_failure(verbose: bool, failed: jax.Array, name: str, **values) -> None:
    """With ``verbose``, prints ``values`` when the search failed (as Optax)."""
    if not verbose:
        return
    fields = "\n".join(f"{key}: {{{key}}}" for key in values)
    message = f"INFO: jaxfit.{name}: the line search failed.\n{fields}"
    jax.lax.cond(
        failed,
        lambda: jax.debug.print(message, **values),
        lambda: None,
    )


def check_common(slope_rtol, max_learning_rate, descent_safeguard, has_aux, verbose):
    # slope_rtol = 0 asks for plain decrease, as Optax accepts.
    _checks.in_interval("slope_rtol", slope_rtol, 0.0, 1.0, closed_low=True)
    if max_learning_rate is not None:
        _checks.positive("max_learning_rate", max_learning_rate)
    _checks.one_of("descent_safeguard", descent_safeguard, SAFEGUARDS)
    for name, flag in (("has_aux", has_aux), ("verbose", verbose)):
        if not isinstance(flag, bool):
            raise ValueError(f"`{name}` must be a bool, got {flag!r}")
