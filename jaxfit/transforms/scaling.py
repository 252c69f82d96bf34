"""Scaling by a constant, a schedule, or a learning rate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxfit import _checks

# A learning rate is a number or a schedule: a callable of the step count.
ScalarOrSchedule = float | jax.Array | optax.Schedule


def scale(step_size: float | jax.Array) -> optax.GradientTransformation:
    """Multiplies every update by a constant ``step_size``.

    Args:
      step_size: the factor; any real number (negative flips the direction).

    Returns:
      An ``optax.GradientTransformation`` with an empty state.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> tx = jaxfit.scale(-0.5)
      >>> updates, _ = tx.update({'w': jnp.ones(2)}, tx.init({'w': jnp.ones(2)}))
      >>> updates['w']
      Array([-0.5, -0.5], dtype=float32)
    """
    _checks.real("step_size", step_size)

    def update_fn(updates, state, params=None):
        del params
        updates = jax.tree.map(lambda g: jnp.asarray(step_size, g.dtype) * g, updates)
        return updates, state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


# Optax's state class itself, so that a jaxfit state and an Optax state are
# the same pytree (checkpoints and optax.tree tools carry over).
ScaleByScheduleState = optax.ScaleByScheduleState


def scale_by_schedule(
    step_size_fn: optax.Schedule,
) -> optax.GradientTransformation:
    """Multiplies updates by ``step_size_fn(count)``, ``count`` from 0.

    Args:
      step_size_fn: a callable of the int32 step count returning the factor.

    Returns:
      An ``optax.GradientTransformation`` whose state counts the updates.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> tx = jaxfit.scale_by_schedule(lambda count: 0.5 ** count)
      >>> params = jnp.ones(2)
      >>> state = tx.init(params)
      >>> _, state = tx.update(params, state)
      >>> updates, state = tx.update(params, state)
      >>> updates
      Array([0.5, 0.5], dtype=float32)
    """
    if not callable(step_size_fn):
        raise ValueError(
            f"`step_size_fn` must be a callable of the step count, got {step_size_fn!r}"
        )

    def init_fn(params):
        del params
        return ScaleByScheduleState(count=_checks.count())

    def update_fn(updates, state, params=None):
        del params
        step_size = step_size_fn(state.count)
        updates = jax.tree.map(lambda g: jnp.asarray(step_size, g.dtype) * g, updates)
        return updates, ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule | None = None,
    *,
    flip_sign: bool = True,
) -> optax.GradientTransformation:
    """Scales updates by ``-learning_rate`` (a descent step) or ``+``.

    Args:
      learning_rate: a non-negative number, or a schedule (a callable of the
        step count) returning one; None (as Optax) leaves the updates as they
        are.
      flip_sign: when True (the default) the updates are multiplied by
        ``-learning_rate`` so that ``apply_updates`` descends the loss.

    Returns:
      An ``optax.GradientTransformation``; stateless for a constant rate, with
      a step count for a schedule.

    Raises:
      ValueError: if ``learning_rate`` is negative or not a number.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> tx = jaxfit.scale_by_learning_rate(0.1)
      >>> updates, _ = tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
      >>> updates
      Array([-0.1, -0.1], dtype=float32)
    """
    if learning_rate is None:
        return optax.identity()
    _checks.learning_rate("learning_rate", learning_rate)
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)
