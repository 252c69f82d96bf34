"""Combinators: ``chain`` and ``apply_updates``.

``chain`` is Optax's, behind a check of its arguments. Reusing Optax's means a
jaxfit chain *is* an Optax chain: the same state (a tuple of member states),
the same extra-argument rule (every member that accepts extra keyword
arguments receives them all; plain members are wrapped to ignore them), so
jaxfit and Optax chains nest either way and Optax's state tools
(``optax.tree.get``, ``inject_hyperparams``, ``MultiSteps``) see through them.
What jaxfit adds is the check: a factory passed uncalled or some other object
fails here, naming the argument, instead of at ``init`` with an unpacking
error.
"""

from __future__ import annotations

from typing import Any

import jax
import optax


def _check_transformation(index: int, transform: Any) -> None:
    if isinstance(transform, optax.GradientTransformation):
        return
    init = getattr(transform, "init", None)
    update = getattr(transform, "update", None)
    if callable(init) and callable(update):
        return  # a look-alike with init/update; Optax wraps it as well
    hint = ""
    if callable(transform):
        name = getattr(transform, "__name__", "it")
        hint = f"; it is callable: did you mean {name}(...)?"
    raise ValueError(
        f"chain argument {index} must be a GradientTransformation (an object "
        f"with init and update), got {type(transform).__name__}{hint}"
    )


def chain(
    *args: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """Applies ``args`` in order; state is the tuple of their states.

    Extra keyword arguments given to ``update`` (for example ``value=`` for a
    line search) reach every member that accepts extra arguments. The result
    is ``optax.chain``'s, so it mixes freely with Optax transformations.

    Args:
      *args: ``optax.GradientTransformation`` objects (jaxfit's or
        Optax's), applied first to last.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: if an argument is not a transformation (for example a
        factory such as ``jaxfit.adam`` passed without calling it).

    Example:
      >>> import jax.numpy as jnp, jaxfit, optax
      >>> tx = jaxfit.chain(jaxfit.clip_by_global_norm(1.0), optax.sgd(0.1))
      >>> g = jnp.array([30.0, 40.0])
      >>> updates, _ = tx.update(g, tx.init(g))
      >>> updates
      Array([-0.06, -0.08], dtype=float32)
    """
    for index, transform in enumerate(args):
        _check_transformation(index, transform)
    if not args:  # optax.chain() fails to unpack; an empty chain is identity
        return optax.with_extra_args_support(optax.identity())
    return optax.chain(*args)


def apply_updates(params: optax.Params, updates: optax.Updates) -> optax.Params:
    """Returns ``params + updates`` leaf by leaf, keeping the params' dtypes.

    Args:
      params: a pytree of arrays.
      updates: a pytree of the same structure (``None`` leaves are skipped).

    Returns:
      The updated params, each leaf in its original dtype.

    Raises:
      ValueError: if ``updates`` does not have the structure of ``params``.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> jaxfit.apply_updates({'w': jnp.ones(2)}, {'w': jnp.full(2, 0.5)})
      {'w': Array([1.5, 1.5], dtype=float32)}
    """
    try:
        return optax.apply_updates(params, updates)
    except (TypeError, ValueError) as error:
        params_def = jax.tree.structure(params)
        updates_def = jax.tree.structure(updates)
        if params_def == updates_def:
            raise
        raise ValueError(
            "`updates` must have the tree structure of `params`; got "
            f"{updates_def} for params {params_def}"
        ) from error


def flatten(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """Runs ``inner`` on all leaves raveled into one vector (Optax's flatten).

    Each leaf of the state then becomes one buffer instead of one per param
    leaf. Measured in ``benchmarks/transforms.py`` (2-core CPU): with 1000
    leaves, a jitted ``clip_by_global_norm + adam`` step called from a Python
    loop takes about half the time, because per-call overhead grows with the
    number of buffers. Inside ``lax.scan`` with large leaves it is slower (the
    ravel and unravel cost extra passes over memory), so it is opt-in.

    Args:
      inner: the transformation to run on the flat vector.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: if ``inner`` is not a transformation.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> tx = jaxfit.flatten(jaxfit.adam(0.1))
      >>> params = {'a': jnp.ones(2), 'b': jnp.ones(3)}
      >>> state = tx.init(params)
      >>> state[0].mu.shape  # one moment vector for all five params
      (5,)
    """
    _check_transformation(0, inner)
    return optax.with_extra_args_support(optax.flatten(inner))
