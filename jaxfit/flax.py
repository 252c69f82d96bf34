"""Running jaxfit line searches from Flax training states.

Flax linen's ``TrainState.apply_gradients`` calls ``tx.update(grads,
opt_state, params)`` without extra arguments, so a line search never receives
``value``, ``grad`` and ``value_fn``. :func:`apply_gradients` is the drop-in
replacement that passes them. ``nnx.Optimizer.update(model, grads, **kwargs)``
does forward extra arguments, but the line search evaluates the objective on
the optimizer's pure parameter state, not on the module: :func:`nnx_value_fn`
turns a loss of the module into such an objective.

Flax is imported lazily, only by :func:`nnx_value_fn`: importing this module
does not need Flax.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import optax


def apply_gradients(
    state: Any,
    *,
    grads: Any,
    value: Any,
    value_fn: Callable[..., Any],
    **extra_args: Any,
) -> Any:
    """``state.apply_gradients(grads=grads)`` that feeds a line search.

    Calls ``state.tx.update(grads, state.opt_state, state.params,
    value=value, grad=grads, value_fn=value_fn, **extra_args)``, applies the
    updates and increments ``state.step``, as linen's ``TrainState`` does.
    Works with any ``TrainState`` subclass (other fields are kept; replace
    them with ``.replace(...)`` afterwards).

    Args:
      state: a ``flax.training.train_state.TrainState`` (or any dataclass
        with ``step``, ``params``, ``tx``, ``opt_state`` and ``replace``).
      grads: the gradient of the objective at ``state.params`` (for complex
        params, Optax's convention: the conjugate of ``jax.grad``'s).
      value: the objective at ``state.params``.
      value_fn: the objective, ``value_fn(params, **kwargs)``.
      **extra_args: further keyword arguments for the chain, e.g. ``batch=``;
        jaxfit line searches pass ``value_fn`` the ones it accepts.

    Returns:
      The new state, with ``step + 1``, new ``params`` and ``opt_state``.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxfit
      >>> from jaxfit.flax import apply_gradients
      >>> from flax.training.train_state import TrainState
      >>> def loss(params, batch):
      ...     return jnp.mean((batch['x'] @ params['w'] - batch['y']) ** 2)
      >>> tx = jaxfit.chain(
      ...     optax.sgd(1.0), jaxfit.scale_by_backtracking_linesearch(20))
      >>> state = TrainState.create(
      ...     apply_fn=None, params={'w': jnp.zeros(2)}, tx=tx)
      >>> batch = {'x': jnp.eye(2), 'y': jnp.array([1.0, -1.0])}
      >>> value, grads = jax.value_and_grad(loss)(state.params, batch)
      >>> state = apply_gradients(
      ...     state, grads=grads, value=value, value_fn=loss, batch=batch)
      >>> int(state.step), float(loss(state.params, batch)) < float(value)
      (1, True)
    """
    updates, opt_state = state.tx.update(
        grads,
        state.opt_state,
        state.params,
        value=value,
        grad=grads,
        value_fn=value_fn,
        **extra_args,
    )
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state)


def nnx_value_fn(
    loss_fn: Callable[..., Any], model: Any, wrt: Any = None
) -> Callable[..., Any]:
    """The objective of an ``nnx.Optimizer``'s parameters, from a module loss.

    ``nnx.Optimizer.update(model, grads, **kwargs)`` passes ``kwargs`` to the
    transformation and the line search evaluates ``value_fn`` on the pure
    parameter state (the ``wrt`` variables). The returned ``value_fn(params,
    ...)`` merges those parameters into a copy of ``model`` (other variables
    as they are now) and calls ``loss_fn(copy, ...)``; the model itself is not
    touched. Its signature is ``loss_fn``'s with the module replaced by
    ``params``, so extra arguments such as ``batch=`` reach ``loss_fn`` under
    jaxfit's and Optax's rules alike.

    Args:
      loss_fn: ``loss_fn(model, *args, **kwargs)`` returning the loss (or
        ``(loss, aux)`` with a line search built with ``has_aux=True``).
      model: the ``nnx.Module`` being optimized.
      wrt: the filter of the optimizer's variables; ``nnx.Param`` by default.

    Returns:
      ``value_fn(params, *args, **kwargs)``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxfit
      >>> from flax import nnx
      >>> from jaxfit.flax import nnx_value_fn
      >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
      >>> def loss(model, batch):
      ...     return jnp.mean((model(batch['x']) - batch['y']) ** 2)
      >>> batch = {'x': jnp.eye(2), 'y': jnp.ones((2, 1))}
      >>> optimizer = nnx.Optimizer(
      ...     model, jaxfit.scale_by_zoom_linesearch(10), wrt=nnx.Param)
      >>> value, grads = nnx.value_and_grad(loss)(model, batch)
      >>> minus_grads = jax.tree.map(lambda g: -g, grads)  # the direction
      >>> _ = optimizer.update(
      ...     model, minus_grads, value=value, grad=grads,
      ...     value_fn=nnx_value_fn(loss, model), batch=batch)
      >>> float(loss(model, batch)) < float(value)
      True
    """
    from flax import nnx

    wrt = nnx.Param if wrt is None else wrt
    graphdef, _, rest = nnx.split(model, wrt, ...)

    def value_fn(params, *args, **kwargs):
        return loss_fn(nnx.merge(graphdef, params, rest), *args, **kwargs)

    try:
        parameters = list(inspect.signature(loss_fn).parameters.values())
    except (TypeError, ValueError):
        return value_fn
    if parameters and parameters[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        first = inspect.Parameter("params", inspect.Parameter.POSITIONAL_ONLY)
        parameters = [first, *parameters[1:]]
        value_fn.__signature__ = inspect.Signature(parameters)
    return value_fn
