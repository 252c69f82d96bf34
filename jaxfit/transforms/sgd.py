"""Momentum and stochastic gradient descent."""

from __future__ import annotations

from typing import Any

import jax
import optax

from jaxfit import _checks
from jaxfit.transforms.combine import chain
from jaxfit.transforms.scaling import ScalarOrSchedule, scale_by_learning_rate

# Optax's state class itself: the same pytree as optax.trace's state.
TraceState = optax.TraceState


def trace(
    decay: float,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> optax.GradientTransformation:
    """Heavy-ball momentum: ``trace = g + decay * trace``.

    Args:
      decay: the momentum coefficient, in [0, 1).
      nesterov: return ``g + decay * trace`` (Nesterov) instead of ``trace``.
      accumulator_dtype: optional dtype of the accumulator.

    Returns:
      An ``optax.GradientTransformation`` with a ``TraceState`` whose dtypes
      are fixed at ``init``.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> tx = jaxfit.trace(0.5)
      >>> g = jnp.ones(2)
      >>> _, state = tx.update(g, tx.init(g))
      >>> tx.update(g, state)[0]
      Array([1.5, 1.5], dtype=float32)
    """
    _checks.decay_rate("decay", decay)
    _checks.optional_dtype("accumulator_dtype", accumulator_dtype)

    def init_fn(params):
        _checks.params(params)
        return TraceState(trace=_checks.zeros_like(params, accumulator_dtype))

    def update_fn(updates, state, params=None):
        del params
        new_trace = jax.tree.map(
            lambda g, t: g + decay * t.astype(g.dtype), updates, state.trace
        )
        if nesterov:
            updates = jax.tree.map(lambda g, t: g + decay * t, updates, new_trace)
        else:
            updates = new_trace
        return updates, TraceState(trace=optax.tree.cast_like(new_trace, state.trace))

    return optax.GradientTransformation(init_fn, update_fn)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    Args:
      learning_rate: a non-negative number or a schedule of the step count.
      momentum: the momentum decay in [0, 1), or None for plain SGD.
      nesterov: use Nesterov momentum (needs ``momentum``).
      accumulator_dtype: optional dtype of the momentum accumulator.

    Returns:
      An ``optax.GradientTransformationExtraArgs``, Optax's chain of the
      momentum (or identity) and the rate: the same state as ``optax.sgd``.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> tx = jaxfit.sgd(0.1, momentum=0.9)
      >>> g = jnp.ones(2)
      >>> tx.update(g, tx.init(g))[0]
      Array([-0.1, -0.1], dtype=float32)
    """
    if nesterov and momentum is None:
        raise ValueError("`nesterov=True` needs a `momentum` value")
    # Optax's structure (identity or trace, then the rate): the same state.
    return chain(
        optax.identity()
        if momentum is None
        else trace(momentum, nesterov, accumulator_dtype),
        scale_by_learning_rate(learning_rate),
    )
