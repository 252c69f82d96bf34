"""Clipping: element-wise and by the global norm of all updates.

Non-finite policy: clipping never turns a non-finite gradient into a finite
number. ``clip`` passes NaN and +-inf elements through unchanged;
``clip_by_global_norm`` leaves all updates unchanged when the global norm is
not finite. Either way the NaN/inf reaches the caller, where it can be detected
(``optax.apply_if_finite``, or the streaming driver, which skips such steps)
instead of being hidden as zeros or as a silently clipped value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxfit import _checks


def clip(max_delta: float | jax.Array) -> optax.GradientTransformation:
    """Clips every update element to ``[-max_delta, max_delta]``.

    Non-finite elements pass through unchanged (see the module docstring).

    Args:
      max_delta: the largest absolute value an element may keep; > 0.

    Returns:
      A stateless ``optax.GradientTransformation``.

    Raises:
      ValueError: if ``max_delta`` is not a positive finite number.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> tx = jaxfit.clip(1.0)
      >>> g = jnp.array([-3.0, 0.5, 2.0])
      >>> tx.update(g, tx.init(g))[0]
      Array([-1. ,  0.5,  1. ], dtype=float32)
    """
    _checks.positive("max_delta", max_delta)

    def clip_leaf(g):
        return jnp.where(jnp.isfinite(g), jnp.clip(g, -max_delta, max_delta), g)

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(clip_leaf, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def clip_by_global_norm(max_norm: float | jax.Array) -> optax.GradientTransformation:
    """Rescales all updates together so their global L2 norm is <= ``max_norm``.

    Updates whose global norm is already within ``max_norm`` are returned
    unchanged; otherwise every leaf is multiplied by ``max_norm / norm``, so
    the direction is kept. One scalar factor is computed per step and applied
    with a single multiply per element. A non-finite norm leaves the updates
    unchanged (see the module docstring).

    Args:
      max_norm: the largest global norm the updates may have; > 0.

    Returns:
      A stateless ``optax.GradientTransformation``.

    Raises:
      ValueError: if ``max_norm`` is not a positive finite number.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> tx = jaxfit.clip_by_global_norm(1.0)
      >>> g = {'a': jnp.array([3.0]), 'b': jnp.array([4.0])}
      >>> clipped, _ = tx.update(g, tx.init(g))
      >>> clipped['a'], clipped['b']
      (Array([0.6], dtype=float32), Array([0.8], dtype=float32))
    """
    _checks.positive("max_norm", max_norm)

    def update_fn(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        factor = jnp.where(
            jnp.isfinite(norm), max_norm / jnp.maximum(norm, max_norm), 1.0
        )
        updates = jax.tree.map(lambda g: g * factor.astype(g.dtype), updates)
        return updates, state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)
