"""Backtracking line search for sufficient decrease (Armijo)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxfit import _checks
from jaxfit.transforms.linesearch import _common
from jaxfit.transforms.linesearch._common import LinesearchInfo


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """State of :func:`scale_by_backtracking_linesearch`.

    Optax's fields (``learning_rate``, ``value``, ``grad``, ``info``) with
    jaxfit's :class:`LinesearchInfo`, plus the first trial of the next search.

    Attributes:
      learning_rate: the accepted step size (0 when no step was taken).
      value: the objective at the new params (``value`` when no step).
      grad: with ``store_grad=True``, ``jax.grad`` of the objective at the new
        params (what :func:`value_and_grad_from_state` returns); else None.
      info: a :class:`LinesearchInfo`.
      next_learning_rate: the first trial of the next search.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: optax.Updates | None
    info: LinesearchInfo
    next_learning_rate: jax.Array


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
    verbose: bool = False,
    *,
    has_aux: bool = False,
    descent_safeguard: str = "negative_gradient",
) -> optax.GradientTransformationExtraArgs:
    r"""Backtracking line search for sufficient decrease (Armijo).

    Optax's arguments, in Optax's order, then jaxfit's keyword-only ones.
    Scales the direction ``u`` (the incoming updates) by the first step
    ``t = t0 * decrease_factor**k`` that satisfies

    .. math:: f(w + t u) \le f(w) + c\, t\, \mathrm{Re}\langle g, u \rangle
       + \text{atol} + \text{rtol}\, |f(w)|,

    with ``t0 = min(increase_factor * t_prev, max_learning_rate)`` (``t_prev =
    1`` at the first update, as Optax) and ``g``
    the ``grad`` passed to ``update`` (for complex params Optax's convention,
    ``conj(jax.grad(f))``). Each trial costs one evaluation of ``value_fn``
    (value only). Under ``lax.scan`` over minibatches with ``batch=`` passed
    to ``update`` this is stochastic Armijo (Vaswani et al., 2019): the search
    runs on the current batch.

    Safeguards (see :mod:`jaxfit.transforms.linesearch`): a non-descent
    direction is replaced by the rescaled negative gradient (or skipped); a
    non-finite trial shrinks the next by 10x instead of ``decrease_factor``;
    if no trial satisfies Armijo, the last (shortest) trial is taken if its
    value is below ``value`` (flagged by ``info.conditions_met = False``),
    else no step. After a failed search the next one goes on below its
    shortest trial (Optax's stays at 0; restarting from ``max_learning_rate``
    would retry the same too-long steps forever).

    Args:
      max_backtracking_steps: the most trials per update; an integer >= 1
        (or a 0-d integer array, as ``optax.inject_hyperparams`` passes it).
      slope_rtol: the Armijo constant ``c``, in [0, 1) (0: plain decrease).
      decrease_factor: the factor between trials, in (0, 1).
      increase_factor: the first trial is the previous step times this; any
        value >= 0, as Optax (1 keeps the previous step, below 1 shrinks it,
        ``math.inf`` always starts at ``max_learning_rate``).
      max_learning_rate: the largest step tried; > 0.
      atol: absolute slack of the decrease condition; >= 0.
      rtol: slack relative to ``|value|``; >= 0.
      store_grad: also store the gradient at the new params in the state, for
        :func:`value_and_grad_from_state`. The trials then keep the forward
        pass (``jax.vjp``) and run the backward pass only for the accepted
        trial, so a deterministic objective costs no extra evaluation.
      verbose: print the search's numbers when it fails (``jax.debug.print``).
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
    _checks.positive_int_hyperparameter(
        "max_backtracking_steps", max_backtracking_steps
    )
    _common.check_common(
        slope_rtol, max_learning_rate, descent_safeguard, has_aux, verbose
    )
    _checks.in_interval("decrease_factor", decrease_factor, 0.0, 1.0)
    _checks.in_interval(
        "increase_factor",
        increase_factor,
        0.0,
        math.inf,
        closed_low=True,
        closed_high=True,
    )
    _checks.non_negative("atol", atol)
    _checks.non_negative("rtol", rtol)

    def next_guess(step, dtype):
        """The first trial after a step: ``min(increase_factor * step, max)``,
        and ``max_learning_rate`` once that underflows."""
        guess = jnp.minimum(increase_factor * step, max_learning_rate)
        return jnp.where(guess > jnp.finfo(dtype).tiny, guess, max_learning_rate)

    def init_fn(params):
        _checks.params(params)
        dtype = _common.scalar_dtype(params)
        one = jnp.ones([], dtype)
        return ScaleByBacktrackingLinesearchState(
            # Optax starts from a step of 1: the first trial is
            # min(increase_factor, max_learning_rate).
            learning_rate=one,
            value=jnp.full([], jnp.inf, dtype),
            grad=_checks.zeros_like(params) if store_grad else None,
            info=_common.init_info(dtype),
            next_learning_rate=next_guess(one, dtype).astype(dtype),
        )

    def update_fn(updates, state, params, *, value, grad, value_fn, **extra_args):
        dtype = _common.scalar_dtype(params)
        fn = _common.objective(value_fn, extra_args, has_aux, dtype)
        value = _common.as_scalar("`value`", value, dtype)
        direction, slope, searchable, descent, stationary = _common.descent_direction(
            updates, grad, dtype, descent_safeguard
        )
        searchable = searchable & jnp.isfinite(value)
        guess = _common.as_state_array(state.next_learning_rate, dtype)
        slack = atol + rtol * jnp.abs(value)
        one = jnp.ones([], dtype)
        stored_grad = state.grad

        def cond_fn(carry):
            return searchable & ~carry.accepted & (carry.count < max_backtracking_steps)

        def body_fn(carry):
            factor = jnp.where(
                jnp.isfinite(carry.value),
                decrease_factor,
                jnp.minimum(decrease_factor, _common.NONFINITE_SHRINK),
            )
            step = jnp.where(carry.count == 0, guess, carry.step * factor).astype(dtype)
            trial = _common.step_along(params, step, direction)
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
            # The state holds jax.grad's convention (what jax.value_and_grad
            # returns), the conjugate of Optax's `grad` for complex params.
            grad=(
                optax.tree.cast_like(optax.tree.conj(grad), stored_grad)
                if store_grad
                else None
            ),
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
        total = _common.as_state_array(state.info.total_evaluations, jnp.int32)
        info = LinesearchInfo(
            num_evaluations=num_evaluations,
            total_evaluations=total + num_evaluations,
            conditions_met=carry.accepted | (stationary & jnp.isfinite(value)),
            descent_direction=descent,
            nonfinite=carry.nonfinite,
            decrease_error=jnp.where(carry.count > 0, decrease_error, 0).astype(dtype),
            curvature_error=jnp.zeros([], dtype),
        )
        _common.report_failure(
            verbose,
            ~info.conditions_met,
            "scale_by_backtracking_linesearch",
            value=value,
            slope=slope,
            stepsize=step,
            decrease_error=info.decrease_error,
            descent_direction=descent,
        )
        # The next search starts above a step taken; after trials that all
        # failed it goes on below the shortest one (a search whose steps are
        # all too long must not restart from the same steps forever), and
        # from max_learning_rate once that underflows.
        below = carry.step * decrease_factor
        next_step = jnp.where(
            step > 0,
            next_guess(step, dtype),
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
        return _common.scaled(step, direction), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
