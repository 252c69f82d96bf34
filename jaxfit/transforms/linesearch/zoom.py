"""Zoom line search for the strong Wolfe conditions (Nocedal & Wright 3.5/3.6)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxfit import _checks
from jaxfit.transforms.linesearch import _common
from jaxfit.transforms.linesearch._common import LinesearchInfo

_INITIAL_GUESSES = ("keep", "one")


class ScaleByZoomLinesearchState(NamedTuple):
    """State of :func:`scale_by_zoom_linesearch` (Optax's fields).

    Attributes:
      learning_rate: the accepted step size (0 when no step was taken).
      value: the objective at the new params.
      grad: ``jax.grad`` of the objective at the new params (what
        :func:`value_and_grad_from_state` returns).
      info: a :class:`LinesearchInfo`.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: optax.Updates
    info: LinesearchInfo


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


class _Bracket(NamedTuple):
    lo: jax.Array
    f_lo: jax.Array
    s_lo: jax.Array
    hi: jax.Array
    f_hi: jax.Array
    rec: jax.Array
    f_rec: jax.Array


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
        lo + _common.NONFINITE_SHRINK * (hi - lo),
    )
    return jnp.where(use_cubic, cubic, jnp.where(use_quad, quad, fallback))


def _new_bracket(c, step, f, s, armijo, wolfe, f0):
    """The bracket after a trial: first found (algorithm 3.5) or narrowed (3.6).

    Returns ``(bracket, found, grow)``: ``found`` when this bracketing trial
    closes a bracket, ``grow`` when bracketing must go on to a longer step.
    """
    # Bracketing: is [prev, step] or [step, prev] a bracket?
    high = ~armijo | ((f >= c.f_prev) & (c.prev > 0))
    low = ~high & ~wolfe & (s >= 0)
    grow = ~high & ~wolfe & ~low
    zero = jnp.zeros_like(f0)
    first = _Bracket(
        lo=jnp.where(high, c.prev, step),
        f_lo=jnp.where(high, c.f_prev, f),
        s_lo=jnp.where(high, c.s_prev, s),
        hi=jnp.where(high, step, c.prev),
        f_hi=jnp.where(high, f, c.f_prev),
        rec=zero,
        f_rec=f0,
    )
    # Zooming: the trial replaces an end of [lo, hi].
    z_high = ~armijo | (f >= c.f_lo)
    flip = ~z_high & (s * (c.hi - c.lo) >= 0)
    narrowed = _Bracket(
        lo=jnp.where(z_high, c.lo, step),
        f_lo=jnp.where(z_high, c.f_lo, f),
        s_lo=jnp.where(z_high, c.s_lo, s),
        hi=jnp.where(z_high, step, jnp.where(flip, c.lo, c.hi)),
        f_hi=jnp.where(z_high, f, jnp.where(flip, c.f_lo, c.f_hi)),
        rec=jnp.where(z_high | flip, c.hi, c.lo),
        f_rec=jnp.where(z_high | flip, c.f_hi, c.f_lo),
    )
    bracket = _common.tree_select(c.zooming, narrowed, first)
    return bracket, ~c.zooming & (high | low), grow


def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: float | None = None,
    tol: float = 0.0,
    increase_factor: float = 2.0,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    approx_dec_rtol: float | None = 1e-6,
    stepsize_precision: float = 1e-5,
    initial_guess_strategy: str = "keep",
    verbose: bool = False,
    *,
    has_aux: bool = False,
    descent_safeguard: str = "negative_gradient",
) -> optax.GradientTransformationExtraArgs:
    r"""Zoom line search for the strong Wolfe conditions.

    Optax's arguments, in Optax's order, then jaxfit's keyword-only ones.
    Finds a step ``t`` along the direction ``u`` (the incoming updates) with

    .. math::
       f(w + t u) \le f(w) + c_1 t s_0 + \text{tol}, \qquad
       |\langle \nabla f(w + t u), u\rangle| \le c_2 |s_0| + \text{tol},

    where ``s0 = Re <g, u>`` is the slope at ``t = 0`` from the ``grad`` ``g``
    passed to ``update`` (for complex params Optax's convention,
    ``conj(jax.grad(f))``), by Nocedal & Wright's algorithms 3.5 and 3.6: grow
    the step by ``increase_factor`` until a bracket is found, then zoom into
    it with cubic, quadratic or bisection trials using SciPy's rules, so the
    steps match ``scipy.optimize.line_search``. Each trial costs one
    value-and-gradient evaluation; the value and gradient at the accepted
    step are kept in the state for :func:`value_and_grad_from_state`.

    Safeguards (see :mod:`jaxfit.transforms.linesearch`): a non-descent
    direction is replaced by the rescaled negative gradient (or skipped); a
    non-finite trial bounds the bracket and the next trial is 10x closer to
    the finite end; if no trial satisfies both conditions within
    ``max_linesearch_steps``, the trial with the lowest value among those
    satisfying sufficient decrease is taken (``info.conditions_met = False``),
    else no step.

    Args:
      max_linesearch_steps: the most trials per update; an integer >= 1 (or
        a 0-d integer array, as ``optax.inject_hyperparams`` passes it).
      max_learning_rate: the largest step tried, > 0, or None for no bound.
        Reaching it with sufficient decrease ends the search there.
      tol: absolute tolerance on both conditions (Optax's ``tol``); >= 0.
      increase_factor: growth of the step while bracketing; finite, > 1.
      slope_rtol: the sufficient-decrease constant ``c1``, in [0, 1).
      curv_rtol: the curvature constant ``c2``, above ``slope_rtol``;
        ``math.inf`` drops the curvature condition (as in Optax).
      approx_dec_rtol: the tolerance of Hager & Zhang's approximate Wolfe
        condition, accepted in place of sufficient decrease:
        ``f(w + t u) <= f(w) + approx_dec_rtol * |f(w)|`` with slope
        ``<= (2 c1 - 1) s0``. Near a minimum with a nonzero value the
        decrease falls below rounding (float32 first) and exact Armijo cannot
        be verified; this lets the search go on, allowing an increase of at
        most ``approx_dec_rtol * |f(w)|``. None: exact Armijo only. >= 0;
        1e-6 as Optax and CG_DESCENT.
      stepsize_precision: zooming stops when the bracket is shorter than this
        (an absolute length of step, as Optax) and a step with sufficient
        decrease is known; >= 0.
      initial_guess_strategy: ``"keep"`` starts from the previous step (for
        gradient descent), ``"one"`` from 1 (for quasi-Newton directions).
      verbose: print the search's numbers when it fails (``jax.debug.print``).
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
    _checks.positive_int_hyperparameter("max_linesearch_steps", max_linesearch_steps)
    _common.check_common(
        slope_rtol, max_learning_rate, descent_safeguard, has_aux, verbose
    )
    _checks.non_negative("tol", tol)
    _checks.in_interval("increase_factor", increase_factor, 1.0, math.inf)
    _checks.in_interval("curv_rtol", curv_rtol, 0.0, math.inf, closed_high=True)
    c1 = _checks._number("slope_rtol", slope_rtol)
    c2 = _checks._number("curv_rtol", curv_rtol)
    if c1 is not None and c2 is not None and not c1 < c2:
        raise ValueError(
            f"`curv_rtol` must be larger than `slope_rtol` (strong Wolfe needs "
            f"slope_rtol < curv_rtol), got {curv_rtol!r} <= {slope_rtol!r}"
        )
    if approx_dec_rtol is not None:
        _checks.non_negative("approx_dec_rtol", approx_dec_rtol)
    _checks.non_negative("stepsize_precision", stepsize_precision)
    _checks.one_of("initial_guess_strategy", initial_guess_strategy, _INITIAL_GUESSES)
    max_step = math.inf if max_learning_rate is None else max_learning_rate

    def init_fn(params):
        _checks.params(params)
        dtype = _common.scalar_dtype(params)
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.minimum(1.0, max_step).astype(dtype),
            value=jnp.full([], jnp.inf, dtype),
            grad=_checks.zeros_like(params),
            info=_common.init_info(dtype),
        )

    def errors(step, f, s, f0, s0):
        """Decrease and curvature errors of a trial, as Optax measures them
        (0 when met, inf when not finite)."""
        finite = jnp.isfinite(f) & jnp.isfinite(s)
        decrease = f - f0 - slope_rtol * step * s0
        if approx_dec_rtol is not None:
            approx = jnp.maximum(
                s - (2 * slope_rtol - 1) * s0, f - f0 - approx_dec_rtol * jnp.abs(f0)
            )
            decrease = jnp.minimum(decrease, approx)
        curvature = jnp.abs(s) - curv_rtol * jnp.abs(s0)
        decrease = jnp.where(finite, jnp.maximum(decrease, 0), jnp.inf)
        curvature = jnp.where(finite, jnp.maximum(curvature, 0), jnp.inf)
        return decrease.astype(f0.dtype), curvature.astype(f0.dtype), finite

    def update_fn(updates, state, params, *, value, grad, value_fn, **extra_args):
        dtype = _common.scalar_dtype(params)
        fn = _common.objective(value_fn, extra_args, has_aux, dtype)
        value_and_grad = jax.value_and_grad(fn)
        f0 = _common.as_scalar("`value`", value, dtype)
        direction, s0, searchable, descent, stationary = _common.descent_direction(
            updates, grad, dtype, descent_safeguard
        )
        searchable = searchable & jnp.isfinite(f0)
        if initial_guess_strategy == "one":
            guess = jnp.asarray(1.0, dtype)
        else:
            previous = _common.as_state_array(state.learning_rate, dtype)
            guess = jnp.where(previous > 0, previous, 1.0)
        guess = jnp.minimum(guess, max_step).astype(dtype)

        def cond_fn(carry):
            return searchable & ~carry.done & (carry.count < max_linesearch_steps)

        def body_fn(c):
            step = jnp.where(c.zooming, _zoom_trial(c), c.next_step).astype(dtype)
            f, g = value_and_grad(_common.step_along(params, step, direction))
            g = optax.tree.cast_like(g, state.grad)
            s = _common.slope_from_jax_grad(g, direction, dtype)
            decrease_error, curvature_error, finite = errors(step, f, s, f0, s0)
            f = jnp.where(finite, f, jnp.inf)  # NaN compares as "too high"
            # The bracket follows exact sufficient decrease (as Optax); `tol`
            # only widens what is accepted.
            armijo = decrease_error <= 0
            sufficient = decrease_error <= tol
            wolfe = sufficient & (curvature_error <= tol)
            keep = wolfe | (sufficient & (f < c.f_best))
            best, f_best, g_best = _common.tree_select(
                keep, (step, f, g), (c.best, c.f_best, c.g_best)
            )
            bracket, found, grow = _new_bracket(c, step, f, s, armijo, wolfe, f0)
            zooming = c.zooming | found
            at_max = ~c.zooming & grow & (step >= max_step)
            tiny = jnp.abs(bracket.hi - bracket.lo) <= stepsize_precision
            # A bracket shorter than stepsize_precision ends the search once a
            # step with sufficient decrease is known; without one, keep
            # shrinking (steep functions can need tiny steps).
            done = wolfe | at_max | (zooming & tiny & (best > 0))
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
                **bracket._asdict(),
                zoom_count=jnp.where(c.zooming, c.zoom_count + 1, 0),
                best=best,
                f_best=f_best,
                g_best=g_best,
                decrease_error=decrease_error,
                curvature_error=curvature_error,
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
            # The state holds jax.grad's convention (what jax.value_and_grad
            # returns), the conjugate of Optax's `grad` for complex params.
            g_best=optax.tree.cast_like(optax.tree.conj(grad), state.grad),
            decrease_error=zero,
            curvature_error=zero,
        )
        carry = jax.lax.while_loop(cond_fn, body_fn, carry)
        total = _common.as_state_array(state.info.total_evaluations, jnp.int32)
        info = LinesearchInfo(
            num_evaluations=carry.count,
            total_evaluations=total + carry.count,
            conditions_met=carry.wolfe | (stationary & jnp.isfinite(f0)),
            descent_direction=descent,
            nonfinite=carry.nonfinite,
            decrease_error=carry.decrease_error,
            curvature_error=carry.curvature_error,
        )
        _common.report_failure(
            verbose,
            ~info.conditions_met,
            "scale_by_zoom_linesearch",
            value=f0,
            slope=s0,
            stepsize=carry.best,
            decrease_error=carry.decrease_error,
            curvature_error=carry.curvature_error,
            descent_direction=descent,
        )
        new_state = ScaleByZoomLinesearchState(
            learning_rate=carry.best,
            value=carry.f_best,
            grad=carry.g_best,
            info=info,
        )
        return _common.scaled(carry.best, direction), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
