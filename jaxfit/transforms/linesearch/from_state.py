"""Reusing the value and gradient that a line search computed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxfit.transforms.linesearch.backtracking import (
    ScaleByBacktrackingLinesearchState,
)
from jaxfit.transforms.linesearch.zoom import ScaleByZoomLinesearchState

_STATES = (ScaleByBacktrackingLinesearchState, ScaleByZoomLinesearchState)


def _find_value_and_grad(state: Any) -> tuple[jax.Array, Any]:
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, _STATES))
        if isinstance(node, _STATES)
    ]
    if len(found) > 1:
        # KeyError, as optax.tree.get raises for a key found more than once.
        raise KeyError(
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
) -> Callable[..., tuple[Any, Any]]:
    """``jax.value_and_grad`` that reuses what the line search computed.

    Optax's ``value_and_grad_from_state(value_fn)``, plus ``has_aux``. The
    returned function ``(params, *args, state, **kwargs)`` returns the value
    and gradient stored in the line-search state when the value is finite
    (they belong to the params the last update produced), and otherwise (at
    the first step) evaluates ``jax.value_and_grad(value_fn)``. Either way
    the gradient is ``jax.grad``'s, as from ``jax.value_and_grad``: for
    complex params conjugate it before ``update``, as with Optax. For a
    deterministic objective each step then costs only the line search's
    trials. Do not use it when the objective changes between steps (a new
    minibatch): the stored values belong to the previous batch. Under
    ``jax.vmap`` the choice becomes a select and both branches run.

    Args:
      value_fn: the objective, ``value_fn(params, *args, **kwargs)``.
      has_aux: ``value_fn`` returns ``(value, aux)``, and the returned
        function returns ``((value, aux), grad)`` as
        ``jax.value_and_grad(value_fn, has_aux=True)``. The state holds no aux,
        so when the gradient is reused ``value_fn`` is evaluated once more,
        forward only, for the aux (and its value).

    Returns:
      A function ``(params, *args, state, **kwargs) -> (value, grad)`` (or
      ``((value, aux), grad)``) with ``value`` and ``grad`` in the dtypes of
      the state.

    Raises:
      TypeError: if ``value_fn`` is not callable.
      ValueError: (when called) if ``state`` holds no jaxfit or Optax line
        search state with a stored gradient.
      KeyError: (when called) if ``state`` holds more than one (as Optax).

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

      With ``has_aux=True`` the aux comes back as from ``jax.value_and_grad``:

      >>> aux_fn = lambda w: (fn(w), {"residual": w - 1.0})
      >>> (value, aux), grad = jaxfit.value_and_grad_from_state(
      ...     aux_fn, has_aux=True)(w, state=state)
      >>> aux["residual"]
      Array([0., 0., 0.], dtype=float32)
    """
    if not callable(value_fn):
        raise TypeError(f"`value_fn` must be callable, got {value_fn!r}")
    if not isinstance(has_aux, bool):
        raise ValueError(f"`has_aux` must be a bool, got {has_aux!r}")

    def value_and_grad(params, *args, state, **kwargs):
        stored_value, stored_grad = _find_value_and_grad(state)
        stored_value = jnp.asarray(stored_value)  # a Python float after tree.set

        def as_value(value):
            return jnp.asarray(value).reshape(()).astype(stored_value.dtype)

        def compute(params, args, kwargs):
            out, grad = jax.value_and_grad(value_fn, has_aux=has_aux)(
                params, *args, **kwargs
            )
            grad = optax.tree.cast_like(grad, stored_grad)
            if has_aux:
                return (as_value(out[0]), out[1]), grad
            return as_value(out), grad

        def reuse(params, args, kwargs):
            if has_aux:
                value, aux = value_fn(params, *args, **kwargs)
                return (as_value(value), aux), stored_grad
            return stored_value, stored_grad

        return jax.lax.cond(
            jnp.isfinite(stored_value), reuse, compute, params, args, kwargs
        )

    return value_and_grad
