"""Argument checks shared by every factory.

Checks run where the user made the mistake (at construction, or at ``init`` for
params) and name the argument, so an error never surfaces later as a shape or
dtype failure deep inside a compiled step.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _concrete_float(value: Any) -> float | None:
    """Returns ``value`` as a float, or None when it is traced.

    Hyperparameters may arrive as tracers (``optax.inject_hyperparams`` calls the
    factory inside ``init``/``update``); those cannot be checked and are let
    through.
    """
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = None
    # jnp.issubdtype knows bfloat16 and the other ml_dtypes; np.issubdtype
    # says bfloat16 is not a number.
    if (
        array is None
        or array.shape != ()
        or not jnp.issubdtype(array.dtype, jnp.number)
        or jnp.issubdtype(array.dtype, jnp.complexfloating)
    ):
        raise ValueError(f"expected a real number, got {value!r}")
    return float(array)


def _number(name: str, value: Any) -> float | None:
    try:
        number = _concrete_float(value)
    except ValueError:
        raise ValueError(f"`{name}` must be a real number, got {value!r}") from None
    if number is not None and math.isnan(number):
        raise ValueError(f"`{name}` must not be NaN")
    return number


def non_negative(name: str, value: Any) -> None:
    number = _number(name, value)
    if number is not None and not 0 <= number < math.inf:
        raise ValueError(f"`{name}` must be finite and >= 0, got {value!r}")


def positive(name: str, value: Any) -> None:
    number = _number(name, value)
    if number is not None and not 0 < number < math.inf:
        raise ValueError(f"`{name}` must be finite and > 0, got {value!r}")


def decay_rate(name: str, value: Any) -> None:
    """An exponential decay rate lies in [0, 1)."""
    number = _number(name, value)
    if number is not None and not 0 <= number < 1:
        raise ValueError(f"`{name}` must lie in [0, 1), got {value!r}")


def learning_rate(name: str, value: Any) -> None:
    """A learning rate is a non-negative number or a schedule of the count."""
    if callable(value):
        return
    non_negative(name, value)


def optional_dtype(name: str, value: Any) -> None:
    if value is None:
        return
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise ValueError(f"`{name}` must be a dtype or None, got {value!r}") from None
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise ValueError(f"`{name}` must be a floating-point dtype, got {dtype.name}")


def params(tree: Any, name: str = "params") -> None:
    """Every leaf of ``tree`` must be a floating-point (or complex) array.

    JAX treats an unregistered object as a leaf, so a wrong argument (a string,
    a model object instead of its parameters) would otherwise fail inside
    ``zeros_like`` with an unrelated message.
    """
    leaves_with_path = jax.tree_util.tree_leaves_with_path(tree)
    for path, leaf in leaves_with_path:
        where = jax.tree_util.keystr(path) or "(root)"
        if not hasattr(leaf, "dtype") and not isinstance(leaf, (int, float, complex)):
            raise ValueError(
                f"`{name}` must be a pytree of floating-point arrays; the leaf at "
                f"{where} is a {type(leaf).__name__}"
            )
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            raise ValueError(
                f"`{name}` must be a pytree of floating-point arrays; the leaf at "
                f"{where} has dtype {jnp.result_type(leaf).name}"
            )


def zeros_like(tree: Any, dtype: Any = None) -> Any:
    """Strongly typed zeros shaped like ``tree``.

    ``jnp.zeros_like`` keeps the weak type of Python-scalar leaves, and the
    first update would then return a strong type: a second compilation, and a
    ``lax.scan`` carry mismatch. Fixing the dtype here prevents both.
    """

    def leaf_zeros(leaf):
        leaf_dtype = jax.dtypes.canonicalize_dtype(
            dtype if dtype is not None else jnp.result_type(leaf)
        )
        return jnp.zeros(jnp.shape(leaf), leaf_dtype)

    return jax.tree.map(leaf_zeros, tree)


def count() -> jax.Array:
    """The step counter every stateful transformation starts from."""
    return jnp.zeros([], jnp.int32)


def real(name: str, value: Any) -> None:
    _number(name, value)


def positive_int(name: str, value: Any) -> None:
    """A count such as a maximum number of iterations: an integer >= 1.

    Booleans and floats are rejected (``True`` or ``10.0`` steps is a mistake);
    traced values are let through like other hyperparameters.
    """
    if isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")


def positive_int_hyperparameter(name: str, value: Any) -> None:
    """A count that may also arrive as an integer array (or tracer).

    ``optax.inject_hyperparams`` turns every numeric argument, integers
    included, into an array in the state, so a count used only inside the
    computation (a loop bound) must accept a 0-d integer array; a concrete one
    is checked like an int.
    """
    if isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (jax.Array, np.ndarray)) and value.shape == ():
        if jnp.issubdtype(value.dtype, jnp.integer):
            value = int(value)
    positive_int(name, value)


def static_int(name: str, value: Any) -> int:
    """A count that fixes a shape (a memory size): a concrete integer >= 1.

    A 0-d integer array (as ``optax.inject_hyperparams`` passes outside
    ``jit``) is converted; a traced one cannot set a shape, and the error says
    how to keep it static.
    """
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"`{name}` sets an array shape and cannot be traced; with "
            f"optax.inject_hyperparams pass static_args=({name!r},)"
        )
    positive_int_hyperparameter(name, value)
    return int(value)


def in_interval(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    closed_low: bool = False,
    closed_high: bool = False,
) -> None:
    """``value`` lies between ``low`` and ``high`` (open ends unless closed)."""
    number = _number(name, value)
    if number is None:
        return
    above = number >= low if closed_low else number > low
    below = number <= high if closed_high else number < high
    if not (above and below):
        left = "[" if closed_low else "("
        right = "]" if closed_high else ")"
        raise ValueError(
            f"`{name}` must lie in {left}{low}, {high}{right}, got {value!r}"
        )


def one_of(name: str, value: Any, options: tuple[Any, ...]) -> None:
    if value not in options:
        raise ValueError(f"`{name}` must be one of {options!r}, got {value!r}")
