"""L-BFGS: the limited-memory BFGS direction, then jaxfit's zoom line search."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxfit import _checks
from jaxfit.transforms.combine import chain
from jaxfit.transforms.linesearch import scale_by_zoom_linesearch
from jaxfit.transforms.scaling import (
    ScalarOrSchedule,
    scale,
    scale_by_learning_rate,
)


def _precondition(updates, s_memory, y_memory, rhos, identity_scale, oldest):
    """The two-loop recursion (Nocedal & Wright, algorithm 7.4), as Optax's."""
    memory_size = rhos.shape[0]
    indices = (oldest + jnp.arange(memory_size)) % memory_size

    def pair(index):
        return jax.tree.map(lambda x: x[index], (s_memory, y_memory))

    def right_product(vec, index):
        s, y = pair(index)
        alpha = rhos[index] * optax.tree.real(optax.tree.vdot(s, vec))
        vec_new = optax.tree.add_scale(vec, -alpha, y)
        return optax.tree.cast_like(vec_new, vec), alpha

    vec, alphas = jax.lax.scan(right_product, updates, indices, reverse=True)
    vec = optax.tree.scale(identity_scale, vec)

    def left_product(vec, index_alpha):
        index, alpha = index_alpha
        s, y = pair(index)
        beta = rhos[index] * optax.tree.real(optax.tree.vdot(y, vec))
        vec_new = optax.tree.add_scale(vec, alpha - beta, s)
        return optax.tree.cast_like(vec_new, vec), beta

    return jax.lax.scan(left_product, vec, (indices, alphas))[0]


def scale_by_lbfgs(
    memory_size: int = 10,
    scale_init_precond: bool = True,
) -> optax.GradientTransformation:
    r"""Scales updates by L-BFGS, keeping only positive-curvature pairs.

    ``optax.scale_by_lbfgs`` with its signature and its state
    (``optax.ScaleByLBFGSState``), with one difference: a pair
    ``(s, y)`` (change of params, change of updates) whose curvature
    ``Re <y, s>`` is not positive (or not finite) is skipped, not stored. Such
    a pair, which a step without a curvature-checking line search (or a
    non-convex objective) can produce, would make the approximate inverse
    Hessian indefinite and its direction an ascent one. An update at the
    same params as the last one (the line search took no step) also clears
    the memory, as L-BFGS-B restarts after a failed line search: the same
    memory would propose the same failed direction again. When no pair is
    skipped the updates are Optax's. ``state.count`` counts the stored pairs
    plus one (Optax's count of updates when none is skipped): it places the
    next pair in the ring buffer. While no pair is stored the direction is the
    update scaled by ``min(1, 1 / ||update||)``, as Optax's first step.

    Args:
      memory_size: the number of past pairs kept; an integer >= 1.
      scale_init_precond: scale the initial inverse Hessian by
        ``<s, y> / <y, y>`` of the newest pair (else by 1).

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Raises:
      ValueError: for ``memory_size < 1`` or not an integer.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> tx = jaxfit.transforms.scale_by_lbfgs()
      >>> w = jnp.array([1.0, 2.0])
      >>> state = tx.init(w)
      >>> _, state = tx.update(jnp.array([1.0, 1.0]), state, w)
      >>> # The gradient grew against the step: negative curvature, skipped.
      >>> _, state = tx.update(jnp.array([0.0, 0.0]), state, w + 1.0)
      >>> int(state.count), state.weights_memory[0].item()
      (1, 0.0)
    """
    memory_size = _checks.static_int("memory_size", memory_size)

    def init_fn(params):
        _checks.params(params)
        stacked_zeros = jax.tree.map(
            lambda leaf: jnp.zeros((memory_size, *jnp.shape(leaf)), leaf.dtype),
            _checks.zeros_like(params),
        )
        return optax.ScaleByLBFGSState(
            count=_checks.count(),
            params=_checks.zeros_like(params),
            updates=_checks.zeros_like(params),
            diff_params_memory=stacked_zeros,
            diff_updates_memory=stacked_zeros,
            weights_memory=jnp.zeros(memory_size),
        )

    def update_fn(updates, state, params):
        diff_params = optax.tree.sub(params, state.params)
        diff_updates = optax.tree.sub(updates, state.updates)
        curvature = optax.tree.real(optax.tree.vdot(diff_updates, diff_params))
        # The pair is stored only with positive curvature (NaN fails too);
        # otherwise the memory, and the ring position, stay as they were.
        store = (state.count > 0) & (curvature > 0)
        weight = jnp.where(store, 1.0 / jnp.where(store, curvature, 1.0), 0.0)
        slot = (state.count - 1) % memory_size

        def write(memory, new):
            return memory.at[slot].set(jnp.where(store, new, memory[slot]))

        s_memory, y_memory, weights = jax.tree.map(
            write,
            (state.diff_params_memory, state.diff_updates_memory, state.weights_memory),
            (diff_params, diff_updates, weight),
        )
        count = jnp.where(store | (state.count == 0), state.count + 1, state.count)
        # No step at all (a line search that found none): the same memory
        # would give the same failed direction again, so restart from an
        # empty memory, as L-BFGS-B does after a failed line search.
        no_step = (state.count > 0) & (optax.tree.norm(diff_params) == 0)
        count = jnp.where(no_step, 1, count).astype(state.count.dtype)
        weights = jnp.where(no_step, jnp.zeros_like(weights), weights)
        has_pairs = count > 1
        if scale_init_precond:
            # From the newest stored pair (the new one when stored, as Optax).
            newest = (count - 2) % memory_size
            s, y = jax.tree.map(lambda x: x[newest], (s_memory, y_memory))
            numerator = optax.tree.real(optax.tree.vdot(y, s))
            denominator = optax.tree.norm(y, squared=True)
            pair_scale = jnp.where(denominator > 0.0, numerator / denominator, 1.0)
            # Without a pair, Optax's first step: a capped reciprocal norm.
            update_norm = optax.tree.norm(jax.lax.stop_gradient(updates))
            capped_inv_norm = jnp.minimum(1.0, 1.0 / update_norm)
            identity_scale = jnp.where(has_pairs, pair_scale, capped_inv_norm)
        else:
            identity_scale = 1.0
        precond_updates = _precondition(
            updates, s_memory, y_memory, weights, identity_scale, count - 1
        )
        new_state = optax.ScaleByLBFGSState(
            count=count,
            params=params,
            updates=updates,
            diff_params_memory=s_memory,
            diff_updates_memory=y_memory,
            weights_memory=weights,
        )
        return precond_updates, optax.tree.cast_like(new_state, state)

    return optax.GradientTransformation(init_fn, update_fn)


# Optax's default, built once as Optax builds it in its signature:
# `linesearch=None` then means no line search, as in optax.lbfgs.
_DEFAULT_LINESEARCH = scale_by_zoom_linesearch(
    max_linesearch_steps=20, initial_guess_strategy="one"
)


def lbfgs(
    learning_rate: ScalarOrSchedule | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: optax.GradientTransformation | None = _DEFAULT_LINESEARCH,
) -> optax.GradientTransformationExtraArgs:
    """L-BFGS with a strong-Wolfe line search, as ``optax.lbfgs`` but jaxfit's.

    Optax's signature and recipe: ``chain(scale_by_lbfgs(memory_size,
    scale_init_precond), scale(-1) or scale_by_learning_rate(learning_rate),
    linesearch)``, where :func:`scale_by_lbfgs` skips pairs of non-positive
    curvature, and the default ``linesearch`` is jaxfit's
    :func:`scale_by_zoom_linesearch` (20 trials, first trial 1, as Optax's
    default). Compared with ``optax.lbfgs``, the chain compiles once (no
    state dtype change after the first step), a direction that is not a
    descent direction is replaced by the negative gradient instead of
    increasing the loss, non-finite trials shrink the step, and ``value_fn``
    may take a ``batch=`` while other extra arguments are ignored.

    Use it with :func:`value_and_grad_from_state` for a deterministic
    objective (the line search's last evaluation is the next step's value and
    gradient), as in the example. For complex params pass Optax's
    ``conj(jax.grad(f))`` as the gradient, as with ``optax.lbfgs``.

    Args:
      learning_rate: None (the line search sets the step; recommended) or a
        fixed rate or schedule multiplying the direction before the search.
      memory_size: the number of past (step, gradient change) pairs; >= 1.
      scale_init_precond: scale the initial inverse Hessian by
        ``<s, y> / <y, y>`` of the last pair (the usual choice).
      linesearch: a line search transformation (jaxfit's or Optax's), or None
        for no line search (as Optax: the direction is taken as it is).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` takes
      ``(grad, state, params, *, value, grad, value_fn, **extra_args)``
      (``value`` and ``value_fn`` only with a line search).

    Raises:
      ValueError: for ``memory_size < 1``, a negative learning rate, or a
        ``linesearch`` that is not a transformation.

    Example:
      >>> import jax, jax.numpy as jnp, jaxfit
      >>> def rosenbrock(w):
      ...     return jnp.sum(100 * (w[1:] - w[:-1] ** 2) ** 2 + (1 - w[:-1]) ** 2)
      >>> tx = jaxfit.lbfgs()
      >>> value_and_grad = jaxfit.value_and_grad_from_state(rosenbrock)
      >>> @jax.jit
      ... def step(w, state):
      ...     value, grad = value_and_grad(w, state=state)
      ...     updates, state = tx.update(
      ...         grad, state, w, value=value, grad=grad, value_fn=rosenbrock)
      ...     return jaxfit.apply_updates(w, updates), state
      >>> w = jnp.zeros(2)
      >>> state = tx.init(w)
      >>> for _ in range(40):
      ...     w, state = step(w, state)
      >>> bool(jnp.allclose(w, 1.0, atol=1e-3))
      True
    """
    if linesearch is None:
        linesearch = optax.identity()
    elif not (
        callable(getattr(linesearch, "init", None))
        and callable(getattr(linesearch, "update", None))
    ):
        raise ValueError(
            "`linesearch` must be a line search transformation (e.g. "
            f"jaxfit.scale_by_zoom_linesearch(20)) or None, got {linesearch!r}"
        )
    base_scaling = (
        scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate)
    )
    return chain(
        scale_by_lbfgs(memory_size, scale_init_precond),
        base_scaling,
        linesearch,
    )
