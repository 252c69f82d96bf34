"""Adam and AdamW (Kingma & Ba, 2015; Loshchilov & Hutter, 2019)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxfit import _checks
from jaxfit.transforms.combine import chain
from jaxfit.transforms.scaling import ScalarOrSchedule, scale_by_learning_rate

# Optax's state class itself (count, mu, nu): the same pytree as Optax's, so
# states, checkpoints and optax.tree tools carry over.
ScaleByAdamState = optax.ScaleByAdamState


def _square(g):
    """|g|^2 element-wise, real for complex inputs (as Optax)."""
    return (
        jnp.square(g.real) + jnp.square(g.imag)
        if jnp.iscomplexobj(g)
        else jnp.square(g)
    )


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """Rescales updates by Adam's bias-corrected moment estimates.

    ``update = mu_hat / (sqrt(nu_hat + eps_root) + eps)`` with
    ``mu_hat = mu / (1 - b1**t)`` and ``nu_hat = nu / (1 - b2**t)``. The bias
    corrections are two scalars per step, applied by multiplication. The state
    keeps the params' dtypes (``mu`` in ``mu_dtype`` if given) from ``init``
    on, so a jitted step compiles once and the state can be a scan carry.

    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added to the denominator outside the square root; >= 0.
      eps_root: added inside the square root; >= 0 (set it > 0 when
        differentiating through the update).
      mu_dtype: optional dtype of the first moment (e.g. ``jnp.bfloat16``).
      nesterov: use Nesterov momentum (NAdam).

    Returns:
      An ``optax.GradientTransformation`` with a ``ScaleByAdamState``.

    Raises:
      ValueError: for a decay rate outside [0, 1), a negative ``eps`` or
        ``eps_root``, a non-float ``mu_dtype``, or (at ``init``) params that
        are not a pytree of floating-point arrays.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> tx = jaxfit.scale_by_adam()
      >>> params = {'w': jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(params, tx.init(params))
      >>> updates['w'].round(4)  # the first Adam step is sign(g)
      Array([ 1., -1.], dtype=float32)
    """
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.non_negative("eps", eps)
    _checks.non_negative("eps_root", eps_root)
    _checks.optional_dtype("mu_dtype", mu_dtype)

    def init_fn(params):
        _checks.params(params)
        return ScaleByAdamState(
            count=_checks.count(),
            mu=_checks.zeros_like(params, mu_dtype),
            nu=_checks.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        # Bias corrections: scalars in the default float dtype, as Optax.
        mu_scale = 1 / (1 - b1**count)
        nu_scale = 1 / (1 - b2**count)
        next_mu_scale = 1 / (1 - b1 ** optax.safe_increment(count))

        def leaf_update(g, mu, nu):
            mu = (1 - b1) * g + b1 * mu.astype(g.dtype)
            nu = (1 - b2) * _square(g) + b2 * nu
            if nesterov:
                mu_hat = (
                    b1 * next_mu_scale.astype(g.dtype) * mu
                    + (1 - b1) * mu_scale.astype(g.dtype) * g
                )
            else:
                mu_hat = mu * mu_scale.astype(g.dtype)
            nu_hat = nu * nu_scale.astype(nu.dtype)
            update = mu_hat / (jnp.sqrt(nu_hat + eps_root) + eps)
            return update, mu, nu

        leaves, treedef = jax.tree.flatten(updates)
        if not leaves:
            return updates, state._replace(count=count)
        results = [
            leaf_update(g, m, v)
            for g, m, v in zip(
                leaves,
                treedef.flatten_up_to(state.mu),
                treedef.flatten_up_to(state.nu),
                strict=True,
            )
        ]
        new_updates, mu, nu = (treedef.unflatten(r) for r in zip(*results, strict=True))
        mu = optax.tree.cast_like(mu, state.mu)
        nu = optax.tree.cast_like(nu, state.nu)
        return new_updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """Adam: ``scale_by_adam`` followed by ``scale_by_learning_rate``.

    Args:
      learning_rate: a non-negative number or a schedule of the step count.
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in :func:`scale_by_adam`.

    Returns:
      An ``optax.GradientTransformation`` (a chain of the two).

    Example:
      >>> import jax, jax.numpy as jnp, jaxfit
      >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
      >>> tx = jaxfit.adam(0.1)
      >>> params = jnp.zeros(2)
      >>> state = tx.init(params)
      >>> @jax.jit
      ... def step(params, state):
      ...     updates, state = tx.update(jax.grad(loss)(params), state)
      ...     return jaxfit.apply_updates(params, updates), state
      >>> for _ in range(200):
      ...     params, state = step(params, state)
      >>> bool(jnp.allclose(params, 3.0, atol=1e-2))
      True
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """Adam with decoupled weight decay (AdamW).

    The decay ``weight_decay * params`` is added to Adam's direction before
    the learning rate scales both, as in Loshchilov & Hutter and Optax.

    Args:
      learning_rate: a non-negative number or a schedule of the step count.
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in :func:`scale_by_adam`.
      weight_decay: the decay strength, >= 0, or a schedule of the step
        count (as Optax).
      mask: a pytree of booleans shaped like the params (or a callable of the
        params returning one) selecting the leaves to decay; None decays all.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> params = {'w': jnp.ones(2), 'b': jnp.ones(2)}
      >>> tx = jaxfit.adamw(0.1, weight_decay=0.5, mask={'w': True, 'b': False})
      >>> zero = {'w': jnp.zeros(2), 'b': jnp.zeros(2)}
      >>> updates, _ = tx.update(zero, tx.init(params), params)
      >>> updates['w'], abs(updates['b'])
      (Array([-0.05, -0.05], dtype=float32), Array([0., 0.], dtype=float32))
    """
    _checks.learning_rate("weight_decay", weight_decay)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        optax.add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
