"""L-BFGS: Optax's L-BFGS direction followed by jaxfit's zoom line search."""

from __future__ import annotations

import optax

from jaxfit import _checks
from jaxfit.transforms.combine import chain
from jaxfit.transforms.linesearch import scale_by_zoom_linesearch
from jaxfit.transforms.scaling import (
    ScalarOrSchedule,
    scale,
    scale_by_learning_rate,
)


def lbfgs(
    learning_rate: ScalarOrSchedule | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    """L-BFGS with a strong-Wolfe line search, as ``optax.lbfgs`` but jaxfit's.

    ``chain(optax.scale_by_lbfgs(...), scale(-1) or scale_by_learning_rate,
    linesearch)``: the limited-memory BFGS direction (Optax's two-loop
    recursion, whose state already has fixed dtypes) scaled by a step from
    :func:`scale_by_zoom_linesearch` (20 trials, first trial 1, as Optax).
    Compared with ``optax.lbfgs``, the chain compiles once (no state dtype
    change after the first step), a direction spoiled by a negative-curvature
    pair is replaced by the negative gradient instead of increasing the loss,
    non-finite trials shrink the step, and ``value_fn`` may take a ``batch=``
    while other extra arguments are ignored.

    Use it with :func:`value_and_grad_from_state` for a deterministic
    objective (the line search's last evaluation is the next step's value and
    gradient), as in the example.

    Args:
      learning_rate: None (the line search sets the step; recommended) or a
        fixed rate or schedule multiplying the direction before the search.
      memory_size: the number of past (step, gradient change) pairs; >= 1.
      scale_init_precond: scale the initial inverse Hessian by
        ``<s, y> / <y, y>`` of the last pair (the usual choice).
      linesearch: a line search transformation, e.g.
        ``scale_by_zoom_linesearch(...)`` or Optax's; None uses
        ``scale_by_zoom_linesearch(20, initial_guess_strategy="one")``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` takes
      ``(grad, state, params, *, value, grad, value_fn, **extra_args)``.

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
    _checks.positive_int("memory_size", memory_size)
    if linesearch is None:
        linesearch = scale_by_zoom_linesearch(20, initial_guess_strategy="one")
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
        optax.scale_by_lbfgs(memory_size, scale_init_precond),
        base_scaling,
        linesearch,
    )
