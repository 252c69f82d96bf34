"""Line searches: backtracking (Armijo) and zoom (strong Wolfe).

Both are Optax-protocol transformations that scale the incoming direction
``updates`` by a step size found by evaluating the objective along it. They
read the keyword-only extra arguments ``value`` (the objective at ``params``),
``grad`` (its gradient there) and ``value_fn`` (the objective), plus any extra
keyword argument that ``value_fn``'s signature accepts (for example the current
``batch``); other extra arguments are ignored, since other members of a chain
may consume them.

What they guarantee, beyond Optax's line searches:

- **Compile once.** The state has fixed dtypes and shapes from ``init`` on
  (int32 counts, bool flags, step sizes and values in the params' real dtype),
  so a jitted step compiles once and the state is a valid ``lax.scan`` carry.
- **No silent increase of the loss.** A direction that is not a descent
  direction (``<grad, updates> >= 0``, for example Adam's) is replaced by the
  negative gradient rescaled to the direction's norm (``descent_safeguard=
  "negative_gradient"``) or not taken at all (``"skip"``). When the search
  runs out of trials, backtracking takes its last (shortest) trial if that
  lowered the value, zoom the lowest trial satisfying sufficient decrease;
  otherwise no step is taken.
- **Non-finite values shrink the step.** A trial whose value (or slope) is NaN
  or infinite fails, and the next trial is ten times closer to the last
  finite point; parameters never receive a non-finite update. A non-finite
  ``value`` or ``grad`` at ``params`` gives a zero update.
- **Monitoring.** ``state.learning_rate`` is the accepted step size and
  ``state.info`` a :class:`LinesearchInfo` (evaluations used, whether the
  conditions were met, whether the direction was a descent direction).
- ``value_fn`` may return ``(value, aux)`` with ``has_aux=True``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxfit import _checks

_SAFEGUARDS = ("negative_gradient", "skip")
_INITIAL_GUESSES = ("keep", "one")
# A non-finite trial moves the next one ten times closer to the last finite
# point: overflow usually means the step is orders of magnitude too long.
_NONFINITE_SHRINK = 0.1


class LinesearchInfo(NamedTuple):
    """What the last line search did, for monitoring (all 0-d arrays).

    Attributes:
      num_evaluations: int32, calls of ``value_fn`` in the last update.
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


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """State of :func:`scale_by_backtracking_linesearch`.

    Attributes:
      learning_rate: the accepted step size (0 when no step was taken).
      value: the objective at the new params (``value`` when no step).
      grad: the gradient at the new params with ``store_grad=True``, else None.
      info: a :class:`LinesearchInfo`.
      next_learning_rate: the first trial of the next search.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: optax.Updates | None
    info: LinesearchInfo
    next_learning_rate: jax.Array


class ScaleByZoomLinesearchState(NamedTuple):
    """State of :func:`scale_by_zoom_linesearch`.

    Attributes:
      learning_rate: the accepted step size (0 when no step was taken).
      value: the objective at the new params.
      grad: the gradient at the new params.
      info: a :class:`LinesearchInfo`.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: optax.Updates
    info: LinesearchInfo


_STATES = (ScaleByBacktrackingLinesearchState, ScaleByZoomLinesearchState)


# ---------------------------------------------------------------------------
# Shared plumbing
# ---------------------------------------------------------------------------


def _scalar_dtype(params: Any) -> Any:
    """The real dtype of step sizes and values: the params', at least f32."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("`params` must hold at least one array for a line search")
    dtype = jnp.finfo(jnp.result_type(*leaves)).dtype  # real part of complex
    if dtype.itemsize < 4:  # step sizes in bfloat16 would lose the search
        dtype = jnp.dtype(jnp.float32)
    return jax.dtypes.canonicalize_dtype(dtype)


def _init_info(dtype: Any) -> LinesearchInfo:
    return LinesearchInfo(
        num_evaluations=jnp.zeros([], jnp.int32),
        total_evaluations=jnp.zeros([], jnp.int32),
        conditions_met=jnp.zeros([], bool),
        descent_direction=jnp.ones([], bool),
        nonfinite=jnp.zeros([], bool),
        decrease_error=jnp.full([], jnp.inf, dtype),
        curvature_error=jnp.full([], jnp.inf, dtype),
    )


def _value_fn_kwargs(value_fn: Callable, extra_args: dict[str, Any]) -> dict:
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


def _objective(
    value_fn: Callable, extra_args: dict, has_aux: bool, dtype: Any
) -> Callable[[Any], jax.Array]:
    """``params -> value`` as a 0-d array of ``dtype``, aux dropped."""
    if not callable(value_fn):
        raise TypeError(f"`value_fn` must be callable, got {value_fn!r}")
    kwargs = _value_fn_kwargs(value_fn, extra_args)

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
        return _as_scalar("the output of `value_fn`", out, dtype)

    return fn


def _as_scalar(what: str, value: Any, dtype: Any) -> jax.Array:
    value = jnp.asarray(value)
    if value.size != 1:
        raise TypeError(f"{what} must be a scalar, got shape {value.shape}")
    if jnp.iscomplexobj(value):
        raise TypeError(f"{what} must be real, got dtype {value.dtype}")
    return value.reshape(()).astype(dtype)


def _slope(grad: Any, direction: Any, dtype: Any) -> jax.Array:
    """Derivative of ``t -> f(params + t * direction)`` at the point of ``grad``.

    ``Re sum(grad * direction)``: with JAX's convention for complex params the
    steepest descent direction is ``-conj(grad)``.
    """
    terms = [
        jnp.sum(jnp.real(g * d).astype(dtype))
        for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
    ]
    return sum(terms, jnp.zeros([], dtype))


def _norm(tree: Any, dtype: Any) -> jax.Array:
    squares = [
        jnp.sum(jnp.square(jnp.abs(x).astype(dtype))) for x in jax.tree.leaves(tree)
    ]
    return jnp.sqrt(sum(squares, jnp.zeros([], dtype)))


def _descent_direction(updates, grad, dtype, safeguard):
    """Returns ``(direction, slope, searchable, descent, stationary)``.

    A non-descent direction (``slope >= 0`` or non-finite) is replaced by the
    negative gradient rescaled to the direction's norm, so the search starts
    at a step of the same length, or (``skip``) not searched at all. The
    norms are computed only then (a ``cond``): the usual case costs one dot.
    """
    slope = _slope(grad, updates, dtype)
    descent = slope < 0  # False for NaN

    def keep():
        return updates, slope, jnp.zeros([], bool)

    def fall_back():
        grad_norm = _norm(grad, dtype)
        stationary = grad_norm == 0
        if safeguard == "skip":
            return updates, slope, stationary
        updates_norm = _norm(updates, dtype)
        rescale = (
            jnp.isfinite(updates_norm) & (updates_norm > 0) & jnp.isfinite(grad_norm)
        )
        factor = jnp.where(rescale, updates_norm / grad_norm, 1)
        factor = jnp.where(stationary, 0, factor)
        direction = jax.tree.map(
            lambda u, g: -(factor.astype(g.dtype) * jnp.conj(g)).astype(u.dtype),
            updates,
            grad,
        )
        # -factor * |g|^2, written so that it does not overflow.
        fallback_slope = -jnp.where(rescale, updates_norm * grad_norm, grad_norm**2)
        return direction, fallback_slope.astype(dtype), stationary

    direction, slope, stationary = jax.lax.cond(descent, keep, fall_back)
    searchable = slope < 0 if safeguard == "negative_gradient" else descent
    return direction, slope, searchable, descent | stationary, stationary


def _step_along(params, step, direction):
    return jax.tree.map(
        lambda p, d: (p + step.astype(d.dtype) * d).astype(p.dtype), params, direction
    )


def _scaled(step, direction):
    """``step * direction``, exactly zero when no step is taken (no NaN leak)."""
    return jax.tree.map(
        lambda d: jnp.where(step > 0, step.astype(d.dtype) * d, jnp.zeros_like(d)),
        direction,
    )


def _tree_select(pred, on_true, on_false):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _check_common(slope_rtol, max_learning_rate, descent_safeguard, has_aux):
    _checks.in_interval("slope_rtol", slope_rtol, 0.0, 1.0)
    if max_learning_rate is not None:
        _checks.positive("max_learning_rate", max_learning_rate)
    _checks.one_of("descent_safeguard", descent_safeguard, _SAFEGUARDS)
    if not isinstance(has_aux, bool):
        raise ValueError(f"`has_aux` must be a bool, got {has_aux!r}")


# ---------------------------------------------------------------------------
# Backtracking (Armijo)
# ---------------------------------------------------------------------------


class _BacktrackCarry(NamedTuple):
    count: jax.Array  # trials made
    step: jax.Array  # last trial step
    value: jax.Array  # last trial value
    accepted: jax.Array
    nonfinite: jax.Array
    grad: Any  # gradient at the accepted trial (store_grad only)


def scale_by_backtracking_linesearch(
    max_backtracking_steps: int,
    slope_rtol: float = 1e-4,
    decrease_factor: float = 0.8,
    increase_factor: float = 1.5,
    max_learning_rate: float = 1.0,
    atol: float = 0.0,
    rtol: float = 0.0,
    store_grad: bool = False,
    *,
    has_aux: bool = False,
    descent_safeguard: str = "negative_gradient",
) -> optax.GradientTransformationExtraArgs:
    r"""Backtracking line search for sufficient decrease (Armijo).

    Scales the direction ``u`` (the incoming updates) by the first step
    ``t = t0 * decrease_factor**k`` that satisfies

    .. math:: f(w + t u) \le f(w) + c\, t \langle \nabla f(w), u \rangle
       + \text{atol} + \text{rtol}\, |f(w)|,

    with ``t0 = min(increase_factor * t_prev, max_learning_rate)``. Each trial
    costs one evaluation of ``value_fn`` (value only). Under ``lax.scan`` over
    minibatches with ``batch=`` passed to ``update`` this is stochastic Armijo
    (Vaswani et al., 2019): the search runs on the current batch.

    Safeguards (see the module docstring): a non-descent direction is replaced
    by the rescaled negative gradient (or skipped); a non-finite trial shrinks
    the next by 10x instead of ``decrease_factor``; if no trial satisfies
    Armijo, the last (shortest) trial is taken if its value is below
    ``value`` (flagged by ``info.conditions_met = False``), else no step.
    After a failed search the next one goes on below its shortest trial
    (Optax's stays at 0; restarting from
    ``max_learning_rate`` would retry the same too-long steps forever).

    Args:
      max_backtracking_steps: the most trials per update; an integer >= 1.
      slope_rtol: the Armijo constant ``c``, in (0, 1).
      decrease_factor: the factor between trials, in (0, 1).
      increase_factor: the first trial is the previous step times this,
        >= 1 (``math.inf`` always starts at ``max_learning_rate``).
      max_learning_rate: the largest step tried; > 0.
      atol: absolute slack of the decrease condition; >= 0.
      rtol: slack relative to ``|value|``; >= 0.
      store_grad: also store the gradient at the new params in the state, for
        :func:`value_and_grad_from_state`. The trials then keep the forward
        pass (``jax.vjp``) and run the backward pass only for the accepted
        trial, so a deterministic objective costs no extra evaluation.
      has_aux: ``value_fn`` returns ``(value, aux)``; aux is ignored.
      descent_safeguard: ``"negative_gradient"`` or ``"skip"`` (zero update).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with a
      :class:`ScaleByBacktrackingLinesearchState`; ``update`` takes
      ``(updates, state, params, *, value, grad, value_fn, **extra_args)``.

    Raises:
      ValueError: at construction, for an argument outside its range (named
        in the message); at ``init``, for params that are not a non-empty
        pytree of floating-point arrays.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxfit
      >>> fn = lambda w: jnp.sum((w - 1.0) ** 2)
      >>> tx = jaxfit.chain(
      ...     optax.sgd(1.0), jaxfit.scale_by_backtracking_linesearch(20))
      >>> w = jnp.zeros(2)
      >>> state = tx.init(w)
      >>> value, grad = jax.value_and_grad(fn)(w)
      >>> updates, state = tx.update(
      ...     grad, state, w, value=value, grad=grad, value_fn=fn)
      >>> float(fn(w + updates)) < float(value)
      True
      >>> bool(state[1].info.conditions_met), int(state[1].info.num_evaluations)
      (True, 2)
    """
    _checks.positive_int("max_backtracking_steps", max_backtracking_steps)
    _check_common(slope_rtol, max_learning_rate, descent_safeguard, has_aux)
    _checks.in_interval("decrease_factor", decrease_factor, 0.0, 1.0)
    _checks.in_interval(
        "increase_factor",
        increase_factor,
        1.0,
        math.inf,
        closed_low=True,
        closed_high=True,
    )
    _checks.non_negative("atol", atol)
    _checks.non_negative("rtol", rtol)

    def init_fn(params):
        _checks.params(params)
        dtype = _scalar_dtype(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.asarray(max_learning_rate, dtype),
            value=jnp.full([], jnp.inf, dtype),
            grad=_checks.zeros_like(params) if store_grad else None,
            info=_init_info(dtype),
            next_learning_rate=jnp.asarray(max_learning_rate, dtype),
        )

    def update_fn(updates, state, params, *, value, grad, value_fn, **extra_args):
        dtype = state.learning_rate.dtype
        fn = _objective(value_fn, extra_args, has_aux, dtype)
        value = _as_scalar("`value`", value, dtype)
        direction, slope, searchable, descent, stationary = _descent_direction(
            updates, grad, dtype, descent_safeguard
        )
        searchable = searchable & jnp.isfinite(value)
        guess = state.next_learning_rate
        slack = atol + rtol * jnp.abs(value)
        one = jnp.ones([], dtype)
        stored_grad = state.grad

        def cond_fn(carry):
            return searchable & ~carry.accepted & (carry.count < max_backtracking_steps)

        def body_fn(carry):
            factor = jnp.where(
                jnp.isfinite(carry.value),
                decrease_factor,
                jnp.minimum(decrease_factor, _NONFINITE_SHRINK),
            )
            step = jnp.where(carry.count == 0, guess, carry.step * factor).astype(dtype)
            trial = _step_along(params, step, direction)
            if store_grad:
                new_value, vjp_fn = jax.vjp(fn, trial)
            else:
                new_value = fn(trial)
            finite = jnp.isfinite(new_value)
            accepted = finite & (new_value <= value + slope_rtol * step * slope + slack)
            new_grad = carry.grad
            if store_grad:
                # The backward pass runs only for the trial that will be kept:
                # the accepted one, or a last one that still decreased.
                last = carry.count + 1 >= max_backtracking_steps
                kept = accepted | (last & finite & (new_value < value))
                new_grad = jax.lax.cond(
                    kept,
                    lambda: optax.tree.cast_like(vjp_fn(one)[0], stored_grad),
                    lambda: carry.grad,
                )
            return _BacktrackCarry(
                count=carry.count + 1,
                step=step,
                value=new_value,
                accepted=accepted,
                nonfinite=carry.nonfinite | ~finite,
                grad=new_grad,
            )

        zero = jnp.zeros([], dtype)
        carry = _BacktrackCarry(
            count=jnp.zeros([], jnp.int32),
            step=zero,
            value=value,
            accepted=jnp.zeros([], bool),
            nonfinite=jnp.zeros([], bool),
            grad=optax.tree.cast_like(grad, stored_grad) if store_grad else None,
        )
        carry = jax.lax.while_loop(cond_fn, body_fn, carry)

        # Out of trials: the last (shortest) one still helps if it decreased.
        use_last = carry.accepted | (
            jnp.isfinite(carry.value) & (carry.value < value) & (carry.count > 0)
        )
        step = jnp.where(use_last, carry.step, 0)
        new_value = jnp.where(use_last, carry.value, value)
        num_evaluations = carry.count
        decrease_error = carry.value - value - slope_rtol * carry.step * slope - slack
        decrease_error = jnp.where(
            jnp.isfinite(carry.value), jnp.maximum(decrease_error, 0), jnp.inf
        )
        info = LinesearchInfo(
            num_evaluations=num_evaluations,
            total_evaluations=state.info.total_evaluations + num_evaluations,
            conditions_met=carry.accepted | (stationary & jnp.isfinite(value)),
            descent_direction=descent,
            nonfinite=carry.nonfinite,
            decrease_error=jnp.where(carry.count > 0, decrease_error, 0).astype(dtype),
            curvature_error=jnp.zeros([], dtype),
        )
        # The next search starts above a step taken; after trials that all
        # failed it goes on below the shortest one (a search whose steps are
        # all too long must not restart from the same steps forever), and
        # from max_learning_rate once that underflows.
        below = carry.step * decrease_factor
        next_step = jnp.where(
            step > 0,
            jnp.minimum(increase_factor * step, max_learning_rate),
            jnp.where(carry.count > 0, below, guess),
        )
        next_step = jnp.where(
            next_step > jnp.finfo(dtype).tiny, next_step, max_learning_rate
        )
        new_state = ScaleByBacktrackingLinesearchState(
            learning_rate=step.astype(dtype),
            value=new_value.astype(dtype),
            grad=carry.grad,
            info=info,
            next_learning_rate=next_step.astype(dtype),
        )
        return _scaled(step, direction), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------------------
# Zoom (strong Wolfe)
# ---------------------------------------------------------------------------


def _cubicmin(a, fa, fpa, b, fb, c, fc):
    """Minimizer of the cubic through (a, fa), (b, fb), (c, fc) with slope fpa
    at a; NaN or inf when there is none (as SciPy's ``_cubicmin``)."""
    db, dc = b - a, c - a
    denom = (db * dc) ** 2 * (db - dc)
    rb, rc = fb - fa - fpa * db, fc - fa - fpa * dc
    cubic = (dc**2 * rb - db**2 * rc) / denom
    quadratic = (-(dc**3) * rb + db**3 * rc) / denom
    radical = quadratic**2 - 3 * cubic * fpa
    return a + (-quadratic + jnp.sqrt(radical)) / (3 * cubic)


def _quadmin(a, fa, fpa, b, fb):
    """Minimizer of the quadratic through (a, fa), (b, fb) with slope fpa at a."""
    db = b - a
    curvature = (fb - fa - fpa * db) / db**2
    return a - fpa / (2 * curvature)


def _zoom_trial(carry):
    """Next trial inside the bracket: cubic, else quadratic, else bisection
    (SciPy's ``_zoom`` rules); towards ``lo`` when ``f(hi)`` is not finite."""
    lo, hi = carry.lo, carry.hi
    width = jnp.abs(hi - lo)
    left, right = jnp.minimum(lo, hi), jnp.maximum(lo, hi)
    cubic = _cubicmin(
        lo, carry.f_lo, carry.s_lo, hi, carry.f_hi, carry.rec, carry.f_rec
    )
    use_cubic = (
        (carry.zoom_count > 0)
        & jnp.isfinite(cubic)
        & (cubic > left + 0.2 * width)
        & (cubic < right - 0.2 * width)
    )
    quad = _quadmin(lo, carry.f_lo, carry.s_lo, hi, carry.f_hi)
    use_quad = (
        jnp.isfinite(quad) & (quad > left + 0.1 * width) & (quad < right - 0.1 * width)
    )
    fallback = jnp.where(
        jnp.isfinite(carry.f_hi),
        lo + 0.5 * (hi - lo),
        lo + _NONFINITE_SHRINK * (hi - lo),
    )
    return jnp.where(use_cubic, cubic, jnp.where(use_quad, quad, fallback))


class _ZoomCarry(NamedTuple):
    count: jax.Array  # trials made
    zooming: jax.Array  # bracket found; interpolate inside it
    done: jax.Array
    wolfe: jax.Array  # the result satisfies the strong Wolfe conditions
    nonfinite: jax.Array
    next_step: jax.Array  # next trial while bracketing
    prev: jax.Array  # previous bracketing trial: step, value, slope
    f_prev: jax.Array
    s_prev: jax.Array
    lo: jax.Array  # bracket end with the lower value
    f_lo: jax.Array
    s_lo: jax.Array
    hi: jax.Array
    f_hi: jax.Array
    rec: jax.Array  # previous end, third point of the cubic
    f_rec: jax.Array
    zoom_count: jax.Array
    best: jax.Array  # result so far: Wolfe point, or lowest Armijo point
    f_best: jax.Array
    g_best: Any
    decrease_error: jax.Array  # of the last trial
    curvature_error: jax.Array


def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: float | None = None,
    increase_factor: float = 2.0,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    approx_dec_rtol: float | None = 1e-6,
    stepsize_precision: float = 1e-6,
    initial_guess_strategy: str = "keep",
    *,
    has_aux: bool = False,
    descent_safeguard: str = "negative_gradient",
) -> optax.GradientTransformationExtraArgs:
    r"""Zoom line search for the strong Wolfe conditions.

    Finds a step ``t`` along the direction ``u`` (the incoming updates) with

    .. math::
       f(w + t u) \le f(w) + c_1 t \langle \nabla f(w), u\rangle, \qquad
       |\langle \nabla f(w + t u), u\rangle| \le c_2 |\langle \nabla f(w),
       u\rangle|,

    by Nocedal & Wright's algorithms 3.5 and 3.6: grow the step by
    ``increase_factor`` until a bracket is found, then zoom into it with cubic,
    quadratic or bisection trials using SciPy's rules, so the steps match
    ``scipy.optimize.line_search``. Each trial costs one value-and-gradient
    evaluation; the value and gradient at the accepted step are kept in the
    state for :func:`value_and_grad_from_state`.

    Safeguards (see the module docstring): a non-descent direction is replaced
    by the rescaled negative gradient (or skipped); a non-finite trial bounds
    the bracket and the next trial is 10x closer to the finite end; if no
    trial satisfies both conditions within ``max_linesearch_steps``, the trial
    with the lowest value among those satisfying Armijo is taken
    (``info.conditions_met = False``), else no step.

    Args:
      max_linesearch_steps: the most trials per update; an integer >= 1.
      max_learning_rate: the largest step tried, > 0, or None for no bound.
        Reaching it with sufficient decrease ends the search there.
      increase_factor: growth of the step while bracketing; finite, > 1.
      slope_rtol: the sufficient-decrease constant ``c1``, in (0, 1).
      curv_rtol: the curvature constant ``c2``, in (``slope_rtol``, 1).
      approx_dec_rtol: the tolerance of Hager & Zhang's approximate Wolfe
        condition, accepted in place of sufficient decrease:
        ``f(w + t u) <= f(w) + approx_dec_rtol * |f(w)|`` with slope
        ``<= (2 c1 - 1) <grad, u>``. Near a minimum with a nonzero value the
        decrease falls below rounding (float32 first) and exact Armijo cannot
        be verified; this lets the search go on, allowing an increase of at
        most ``approx_dec_rtol * |f(w)|``. None: exact Armijo only. >= 0;
        1e-6 as Optax and CG_DESCENT.
      stepsize_precision: zooming stops when the bracket is narrower than this
        fraction of the step and a step with sufficient decrease is known; >= 0.
      initial_guess_strategy: ``"keep"`` starts from the previous step (for
        gradient descent), ``"one"`` from 1 (for quasi-Newton directions).
      has_aux: ``value_fn`` returns ``(value, aux)``; aux is ignored.
      descent_safeguard: ``"negative_gradient"`` or ``"skip"`` (zero update).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with a
      :class:`ScaleByZoomLinesearchState`; ``update`` takes
      ``(updates, state, params, *, value, grad, value_fn, **extra_args)``.

    Raises:
      ValueError: at construction, for an argument outside its range (named
        in the message); at ``init``, for params that are not a non-empty
        pytree of floating-point arrays.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxfit
      >>> fn = lambda w: jnp.sum((w - 1.0) ** 2)
      >>> tx = jaxfit.chain(optax.sgd(1.0), jaxfit.scale_by_zoom_linesearch(10))
      >>> w = jnp.zeros(2)
      >>> state = tx.init(w)
      >>> value, grad = jax.value_and_grad(fn)(w)
      >>> updates, state = tx.update(
      ...     grad, state, w, value=value, grad=grad, value_fn=fn)
      >>> w + updates  # the exact minimizer along -grad
      Array([1., 1.], dtype=float32)
      >>> float(state[1].learning_rate), bool(state[1].info.conditions_met)
      (0.5, True)
    """
    _checks.positive_int("max_linesearch_steps", max_linesearch_steps)
    _check_common(slope_rtol, max_learning_rate, descent_safeguard, has_aux)
    _checks.in_interval("increase_factor", increase_factor, 1.0, math.inf)
    _checks.in_interval("curv_rtol", curv_rtol, 0.0, 1.0)
    c1 = _checks._number("slope_rtol", slope_rtol)
    c2 = _checks._number("curv_rtol", curv_rtol)
    if c1 is not None and c2 is not None and not c1 < c2:
        raise ValueError(
            f"`curv_rtol` must be larger than `slope_rtol` (strong Wolfe needs "
            f"0 < slope_rtol < curv_rtol < 1), got {curv_rtol!r} <= {slope_rtol!r}"
        )
    if approx_dec_rtol is not None:
        _checks.non_negative("approx_dec_rtol", approx_dec_rtol)
    _checks.non_negative("stepsize_precision", stepsize_precision)
    _checks.one_of("initial_guess_strategy", initial_guess_strategy, _INITIAL_GUESSES)
    max_step = math.inf if max_learning_rate is None else max_learning_rate

    def init_fn(params):
        _checks.params(params)
        dtype = _scalar_dtype(params)
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.asarray(min(1.0, max_step), dtype),
            value=jnp.full([], jnp.inf, dtype),
            grad=_checks.zeros_like(params),
            info=_init_info(dtype),
        )

    def update_fn(updates, state, params, *, value, grad, value_fn, **extra_args):
        dtype = state.learning_rate.dtype
        fn = _objective(value_fn, extra_args, has_aux, dtype)
        value_and_grad = jax.value_and_grad(fn)
        f0 = _as_scalar("`value`", value, dtype)
        grad = optax.tree.cast_like(grad, state.grad)
        direction, s0, searchable, descent, stationary = _descent_direction(
            updates, grad, dtype, descent_safeguard
        )
        searchable = searchable & jnp.isfinite(f0)
        if initial_guess_strategy == "one":
            guess = jnp.asarray(1.0, dtype)
        else:
            guess = jnp.where(state.learning_rate > 0, state.learning_rate, 1.0)
        guess = jnp.minimum(guess, max_step).astype(dtype)

        def cond_fn(carry):
            return searchable & ~carry.done & (carry.count < max_linesearch_steps)

        def body_fn(c):
            step = jnp.where(c.zooming, _zoom_trial(c), c.next_step).astype(dtype)
            f, g = value_and_grad(_step_along(params, step, direction))
            g = optax.tree.cast_like(g, state.grad)
            s = _slope(g, direction, dtype)
            finite = jnp.isfinite(f) & jnp.isfinite(s)
            f = jnp.where(finite, f, jnp.inf)  # NaN compares as "too high"
            decrease_error = f - f0 - slope_rtol * step * s0
            armijo = finite & (decrease_error <= 0)
            if approx_dec_rtol is not None:
                approx = (f <= f0 + approx_dec_rtol * jnp.abs(f0)) & (
                    s <= (2 * slope_rtol - 1) * s0
                )
                armijo = armijo | (finite & approx)
            curvature_error = jnp.abs(s) + curv_rtol * s0
            wolfe = armijo & (curvature_error <= 0)
            keep = wolfe | (armijo & (f < c.f_best))
            best, f_best, g_best = _tree_select(
                keep, (step, f, g), (c.best, c.f_best, c.g_best)
            )

            # Bracketing (algorithm 3.5): is [prev, step] or [step, prev] a bracket?
            high = ~armijo | ((f >= c.f_prev) & (c.prev > 0))
            low = ~high & ~wolfe & (s >= 0)
            grow = ~high & ~wolfe & ~low
            at_max = grow & (step >= max_step)
            enter = ~c.zooming & (high | low)
            b_lo = jnp.where(high, c.prev, step)
            b_f_lo = jnp.where(high, c.f_prev, f)
            b_s_lo = jnp.where(high, c.s_prev, s)
            b_hi = jnp.where(high, step, c.prev)
            b_f_hi = jnp.where(high, f, c.f_prev)

            # Zoom (algorithm 3.6): step replaces an end of [lo, hi].
            z_high = ~armijo | (f >= c.f_lo)
            flip = ~z_high & (s * (c.hi - c.lo) >= 0)
            z_lo = jnp.where(z_high, c.lo, step)
            z_f_lo = jnp.where(z_high, c.f_lo, f)
            z_s_lo = jnp.where(z_high, c.s_lo, s)
            z_hi = jnp.where(z_high, step, jnp.where(flip, c.lo, c.hi))
            z_f_hi = jnp.where(z_high, f, jnp.where(flip, c.f_lo, c.f_hi))
            z_rec = jnp.where(z_high | flip, c.hi, c.lo)
            z_f_rec = jnp.where(z_high | flip, c.f_hi, c.f_lo)

            zooming = c.zooming | enter
            lo, f_lo, s_lo, hi, f_hi, rec, f_rec = _tree_select(
                c.zooming,
                (z_lo, z_f_lo, z_s_lo, z_hi, z_f_hi, z_rec, z_f_rec),
                (b_lo, b_f_lo, b_s_lo, b_hi, b_f_hi, jnp.zeros_like(f0), f0),
            )
            zoom_count = jnp.where(c.zooming, c.zoom_count + 1, 0)
            tiny = jnp.abs(hi - lo) <= stepsize_precision * jnp.maximum(lo, hi)
            # A bracket narrower than rounding ends the search once a step with
            # sufficient decrease is known; without one, keep shrinking (steep
            # functions can need tiny steps).
            done = wolfe | (~c.zooming & at_max) | (zooming & tiny & (best > 0))
            return _ZoomCarry(
                count=c.count + 1,
                zooming=zooming,
                done=done,
                wolfe=c.wolfe | wolfe,
                nonfinite=c.nonfinite | ~finite,
                next_step=jnp.minimum(increase_factor * step, max_step).astype(dtype),
                prev=jnp.where(grow, step, c.prev),
                f_prev=jnp.where(grow, f, c.f_prev),
                s_prev=jnp.where(grow, s, c.s_prev),
                lo=lo,
                f_lo=f_lo,
                s_lo=s_lo,
                hi=hi,
                f_hi=f_hi,
                rec=rec,
                f_rec=f_rec,
                zoom_count=zoom_count,
                best=best,
                f_best=f_best,
                g_best=g_best,
                decrease_error=jnp.where(
                    finite, jnp.maximum(decrease_error, 0), jnp.inf
                ).astype(dtype),
                curvature_error=jnp.where(
                    finite, jnp.maximum(curvature_error, 0), jnp.inf
                ).astype(dtype),
            )

        zero = jnp.zeros([], dtype)
        false = jnp.zeros([], bool)
        carry = _ZoomCarry(
            count=jnp.zeros([], jnp.int32),
            zooming=false,
            done=false,
            wolfe=false,
            nonfinite=false,
            next_step=guess,
            prev=zero,
            f_prev=f0,
            s_prev=s0,
            lo=zero,
            f_lo=f0,
            s_lo=s0,
            hi=zero,
            f_hi=f0,
            rec=zero,
            f_rec=f0,
            zoom_count=jnp.zeros([], jnp.int32),
            best=zero,
            f_best=f0,
            g_best=grad,
            decrease_error=zero,
            curvature_error=zero,
        )
        carry = jax.lax.while_loop(cond_fn, body_fn, carry)
        info = LinesearchInfo(
            num_evaluations=carry.count,
            total_evaluations=state.info.total_evaluations + carry.count,
            conditions_met=carry.wolfe | (stationary & jnp.isfinite(f0)),
            descent_direction=descent,
            nonfinite=carry.nonfinite,
            decrease_error=carry.decrease_error,
            curvature_error=carry.curvature_error,
        )
        new_state = ScaleByZoomLinesearchState(
            learning_rate=carry.best,
            value=carry.f_best,
            grad=carry.g_best,
            info=info,
        )
        return _scaled(carry.best, direction), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------------------
# Reusing the value and gradient computed by the line search
# ---------------------------------------------------------------------------


def _find_value_and_grad(state: Any) -> tuple[jax.Array, Any]:
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, _STATES))
        if isinstance(node, _STATES)
    ]
    if len(found) > 1:
        raise ValueError(
            "`state` holds more than one jaxfit line search state; pass the one "
            "to read from"
        )
    if found:
        value, grad = found[0].value, found[0].grad
    else:  # Optax's line searches keep `value` and `grad` fields as well
        value, grad = optax.tree.get(state, "value"), optax.tree.get(state, "grad")
    if value is None or grad is None:
        raise ValueError(
            "no stored value and gradient found in `state`: use a zoom line "
            "search, or a backtracking line search with store_grad=True"
        )
    return value, grad


def value_and_grad_from_state(
    value_fn: Callable[..., Any], *, has_aux: bool = False
) -> Callable[..., tuple[jax.Array, Any]]:
    """``jax.value_and_grad`` that reuses what the line search computed.

    The returned function ``(params, *args, state, **kwargs) -> (value, grad)``
    returns the value and gradient stored in the line-search state when they
    are finite (they belong to the params the last update produced), and
    otherwise (at the first step) evaluates ``jax.value_and_grad(value_fn)``.
    For a deterministic objective each step then costs only the line search's
    trials. Do not use it when the objective changes between steps (a new
    minibatch): the stored values belong to the previous batch. Under
    ``jax.vmap`` the choice becomes a select and both branches run.

    Args:
      value_fn: the objective, ``value_fn(params, *args, **kwargs)``.
      has_aux: ``value_fn`` returns ``(value, aux)``. The aux is not stored in
        the state, so the returned function drops it and returns
        ``(value, grad)`` either way.

    Returns:
      A function ``(params, *args, state, **kwargs) -> (value, grad)`` with
      ``value`` and ``grad`` in the dtypes of the state.

    Raises:
      ValueError: (when called) if ``state`` holds no jaxfit or Optax line
        search state with a stored gradient, or more than one jaxfit one.

    Example:
      >>> import jax, jax.numpy as jnp, jaxfit
      >>> fn = lambda w: jnp.sum((w - 1.0) ** 2)
      >>> tx = jaxfit.lbfgs()
      >>> value_and_grad = jaxfit.value_and_grad_from_state(fn)
      >>> @jax.jit
      ... def step(w, state):
      ...     value, grad = value_and_grad(w, state=state)  # reused after step 1
      ...     updates, state = tx.update(
      ...         grad, state, w, value=value, grad=grad, value_fn=fn)
      ...     return jaxfit.apply_updates(w, updates), state
      >>> w = jnp.zeros(3)
      >>> state = tx.init(w)
      >>> for _ in range(3):
      ...     w, state = step(w, state)
      >>> w
      Array([1., 1., 1.], dtype=float32)
    """
    if not callable(value_fn):
        raise ValueError(f"`value_fn` must be callable, got {value_fn!r}")

    def value_only(params, *args, **kwargs):
        out = value_fn(params, *args, **kwargs)
        return out[0] if has_aux else out

    def value_and_grad(params, *args, state, **kwargs):
        stored_value, stored_grad = _find_value_and_grad(state)

        def compute(params, args, kwargs):
            value, grad = jax.value_and_grad(value_only)(params, *args, **kwargs)
            value = jnp.asarray(value).reshape(()).astype(stored_value.dtype)
            return value, optax.tree.cast_like(grad, stored_grad)

        return jax.lax.cond(
            jnp.isfinite(stored_value),
            lambda *_: (stored_value, stored_grad),
            compute,
            params,
            args,
            kwargs,
        )

    return value_and_grad
