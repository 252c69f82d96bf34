"""Residuals as first-class objects: weights, masks, robust losses, Jacobians.

A *residual function* ``residual_fn(params, batch) -> r`` returns a 1-D vector.
Everything least-squares in jaxfit is built from one:

* :func:`model_residual` makes one from a model ``f(x, *params)`` (SciPy
  style) or ``f(params, x)``, reading ``x``, ``y`` and optional weights and
  mask from a dict batch (:func:`make_batch` builds it);
* :func:`residual_loss` turns one into the scalar loss
  ``0.5 * f_scale**2 * sum(rho((r / f_scale)**2))``, SciPy's ``least_squares``
  cost (a *sum*, not a mean, so ``2 * loss`` is chi-square for a linear loss);
* :func:`jacobian_mode` and :func:`residual_and_jacobian` pick and apply
  forward, reverse or matrix-free differentiation from the shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

LOSSES = ("linear", "huber", "soft_l1", "cauchy", "arctan")
JACOBIAN_MODES = ("auto", "forward", "reverse", "matrix_free")

# A dense Jacobian above this many bytes is not formed in "auto" mode.
DEFAULT_DENSE_JACOBIAN_BYTES = 2 * 1024**3

ResidualFn = Callable[[Any, Any], jax.Array]


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES!r}, got {loss!r}")


def robust_rho(loss: str, z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A robust loss ``rho(z)`` and its first two derivatives, as SciPy.

    ``z`` is the squared scaled residual ``(r / f_scale)**2``. The definitions
    are those of ``scipy.optimize.least_squares``: ``linear`` ``z``; ``huber``
    ``z`` for ``z <= 1`` else ``2 sqrt(z) - 1``; ``soft_l1``
    ``2 (sqrt(1 + z) - 1)``; ``cauchy`` ``log(1 + z)``; ``arctan``
    ``arctan(z)``.

    Args:
      loss: one of ``LOSSES``.
      z: non-negative array.

    Returns:
      ``(rho, rho', rho'')`` evaluated element-wise.

    Raises:
      ValueError: for an unknown ``loss``.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> rho, d1, d2 = jaxfit.robust_rho('huber', jnp.array([0.25, 4.0]))
      >>> rho
      Array([0.25, 3.  ], dtype=float32)
    """
    _check_loss(loss)
    one = jnp.ones_like(z)
    if loss == "linear":
        return z, one, jnp.zeros_like(z)
    if loss == "huber":
        inside = z <= 1
        # sqrt of a safe value: the unselected branch must not make NaN grads.
        root = jnp.sqrt(jnp.where(inside, 1.0, z))
        rho = jnp.where(inside, z, 2 * root - 1)
        d1 = jnp.where(inside, 1.0, 1 / root)
        d2 = jnp.where(inside, 0.0, -0.5 / (root * jnp.where(inside, 1.0, z)))
        return rho, d1, d2
    if loss == "soft_l1":
        t = 1 + z
        return 2 * (jnp.sqrt(t) - 1), t**-0.5, -0.5 * t**-1.5
    if loss == "cauchy":
        t = 1 + z
        return jnp.log1p(z), 1 / t, -1 / t**2
    t = 1 + z**2  # arctan
    return jnp.arctan(z), 1 / t, -2 * z / t**2


def robust_cost(r: jax.Array, loss: str = "linear", f_scale: Any = 1.0) -> jax.Array:
    """``0.5 * f_scale**2 * sum(rho((r / f_scale)**2))``: SciPy's ``cost``.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> jaxfit.robust_cost(jnp.array([1.0, 2.0]))
      Array(2.5, dtype=float32)
    """
    if loss == "linear":
        return 0.5 * jnp.sum(jnp.square(r))
    rho, _, _ = robust_rho(loss, jnp.square(r / f_scale))
    return 0.5 * f_scale**2 * jnp.sum(rho)


def robust_scaling(
    r: jax.Array, loss: str = "linear", f_scale: Any = 1.0
) -> tuple[jax.Array, jax.Array]:
    """SciPy's iteratively reweighted residuals for a robust loss.

    Returns ``(r_scaled, row_scale)`` such that Gauss-Newton on
    ``r_scaled`` and ``row_scale[:, None] * J`` is the Gauss-Newton model of
    the robust cost (``scale_for_robust_loss_function`` in SciPy).

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> r, s = jaxfit.robust_scaling(jnp.array([3.0]))
      >>> r, s
      (Array([3.], dtype=float32), Array([1.], dtype=float32))
    """
    if loss == "linear":
        return r, jnp.ones_like(r)
    z = jnp.square(r / f_scale)
    _, d1, d2 = robust_rho(loss, z)
    d2 = d2 / f_scale**2
    scale = d1 + 2 * d2 * jnp.square(r)
    scale = jnp.sqrt(jnp.maximum(scale, jnp.finfo(r.dtype).eps))
    return r * d1 / scale, scale


def make_batch(
    x: Any,
    y: Any,
    sigma: Any = None,
    mask: Any = None,
) -> dict[str, jax.Array]:
    """The dict batch that :func:`model_residual` reads.

    Args:
      x: the independent variable (any array or pytree the model accepts).
      y: the 1-D data, length ``m``.
      sigma: None, 1-D standard deviations (weights ``1 / sigma``), or a 2-D
        ``m x m`` covariance, whitened by its Cholesky factor as SciPy's
        ``curve_fit`` does.
      mask: None or a boolean ``m``-vector; False points (padding, omitted
        NaNs) contribute exactly zero residual.

    Returns:
      A dict with ``x``, ``y`` and ``weight`` (1-D) or ``scale_tril`` (2-D)
      and ``mask`` where given.

    Raises:
      ValueError: ``sigma`` or ``mask`` not matching ``y``, or a covariance
        that is not positive definite.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> b = jaxfit.make_batch(jnp.arange(3.0), jnp.ones(3), sigma=jnp.full(3, 2.0))
      >>> b['weight']
      Array([0.5, 0.5, 0.5], dtype=float32)
    """
    y = jnp.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"`y` must be 1-D, got shape {y.shape}")
    batch: dict[str, jax.Array] = {"x": x, "y": y}
    m = y.shape[0]
    if sigma is not None:
        sigma = jnp.asarray(sigma, y.dtype)
        if sigma.shape == (m,):
            batch["weight"] = 1 / sigma
        elif sigma.shape == (m, m):
            # The lower triangle only, as SciPy's cholesky(sigma, lower=True):
            # jnp's default averages sigma with its transpose first.
            tril = jnp.linalg.cholesky(sigma, symmetrize_input=False)
            if not isinstance(tril, jax.core.Tracer) and not bool(
                jnp.all(jnp.isfinite(tril))
            ):
                raise ValueError("`sigma` (a covariance) must be positive definite")
            batch["scale_tril"] = tril
        else:
            raise ValueError(
                f"`sigma` must have shape ({m},) or ({m}, {m}), got {sigma.shape}"
            )
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        if mask.shape != (m,):
            raise ValueError(f"`mask` must have shape ({m},), got {mask.shape}")
        batch["mask"] = mask
    return batch


def weight_and_mask(r: jax.Array, batch: Any) -> jax.Array:
    """Applies a dict batch's ``weight``/``scale_tril`` and ``mask`` to ``r``.

    Masked points become exactly 0 through ``where`` (not a product), so a
    NaN a model makes at a padded point cannot leak into the loss value.
    Its derivative still would (``0 * NaN``), so pad with copies of real
    points (as ``curve_fit`` does), not with arbitrary values.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> r = jnp.array([1.0, jnp.nan])
      >>> jaxfit.weight_and_mask(r, {'mask': jnp.array([True, False])})
      Array([1., 0.], dtype=float32)
    """
    if not isinstance(batch, Mapping):
        return r
    if "weight" in batch:
        r = r * batch["weight"]
    elif "scale_tril" in batch:
        r = jax.scipy.linalg.solve_triangular(batch["scale_tril"], r, lower=True)
    if "mask" in batch:
        r = jnp.where(batch["mask"], r, 0)
    return r


def model_residual(model: Callable, *, params_first: bool = False) -> ResidualFn:
    """A residual function ``(params, batch) -> w * (model(x, params) - y)``.

    Args:
      model: ``f(x, *params)`` (SciPy's convention; ``params`` is then a
        sequence or 1-D array unpacked into arguments), or with
        ``params_first=True`` ``f(params, x)`` where ``params`` is any pytree.
      params_first: which convention ``model`` follows.

    Returns:
      ``residual_fn(params, batch)`` reading the dict of :func:`make_batch`.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> res = jaxfit.model_residual(lambda x, a, b: a * x + b)
      >>> res(jnp.array([2.0, 1.0]), jaxfit.make_batch(jnp.arange(3.0), jnp.ones(3)))
      Array([0., 2., 4.], dtype=float32)
    """
    if not callable(model):
        raise ValueError(f"`model` must be callable, got {model!r}")

    def residual_fn(params, batch):
        if params_first:
            prediction = model(params, batch["x"])
        else:
            prediction = model(batch["x"], *params)
        r = jnp.ravel(prediction) - batch["y"]
        return weight_and_mask(r, batch)

    return residual_fn


def residual_loss(
    residual_fn: ResidualFn,
    loss: str = "linear",
    f_scale: float = 1.0,
    *,
    jit: bool = True,
) -> Callable[[Any, Any], jax.Array]:
    """The scalar loss ``0.5 * f_scale**2 * sum(rho((r / f_scale)**2))``.

    The normalisation is SciPy's ``least_squares`` ``cost``: half a *sum*
    over points (not a mean), so with ``loss='linear'`` and ``sigma``
    weights, ``2 * loss`` is the chi-square. The loss takes ``batch`` as a
    keyword too, so it is a valid ``value_fn`` for Optax's line searches.

    Args:
      residual_fn: ``(params, batch) -> r``.
      loss: a robust loss, one of ``LOSSES``.
      f_scale: the soft margin between inlier and outlier residuals; > 0.
      jit: compile the loss (once per shape).

    Returns:
      ``loss(params, batch)``.

    Raises:
      ValueError: unknown ``loss`` or non-positive ``f_scale``.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> res = jaxfit.model_residual(lambda x, a: a * x)
      >>> loss = jaxfit.residual_loss(res)
      >>> batch = jaxfit.make_batch(jnp.arange(3.0), jnp.zeros(3))
      >>> float(loss(jnp.array([2.0]), batch))
      10.0
    """
    from jaxfit import _checks

    _check_loss(loss)
    _checks.positive("f_scale", f_scale)

    def loss_fn(params, batch=None):
        return robust_cost(residual_fn(params, batch), loss, f_scale)

    return jax.jit(loss_fn) if jit else loss_fn


def jacobian_mode(
    n_params: int,
    n_residuals: int,
    mode: str = "auto",
    itemsize: int = 8,
    max_dense_bytes: int = DEFAULT_DENSE_JACOBIAN_BYTES,
) -> str:
    """Chooses how to differentiate the residuals, from the shapes.

    ``forward`` (one ``jvp`` per parameter) when parameters are no more than
    residuals; ``reverse`` (one ``vjp`` per residual) when there are more
    parameters than residuals but fewer than twice as many; ``matrix_free``
    (never forming ``J``: ``J^T J v`` by a ``jvp`` then a ``vjp``, solved with
    conjugate gradients) from twice as many parameters as residuals, or when
    the dense Jacobian would take more than ``max_dense_bytes``. A mode other
    than ``auto`` is returned unchanged (users can force one).

    Why ``matrix_free`` for wide problems: ``J^T J`` has rank at most ``m``,
    so conjugate gradients on the damped system converge in about ``m + 1``
    iterations of ``O(m n)`` each, while a dense step pays an ``O(n^3)``
    solve; measured in ``benchmarks/jacobian.py`` (``n = 3 m`` is already
    faster matrix-free, ``n = 1.5 m`` is not).

    Example:
      >>> import jaxfit
      >>> jaxfit.jacobian_mode(3, 10_000), jaxfit.jacobian_mode(30, 20)
      ('forward', 'reverse')
      >>> jaxfit.jacobian_mode(500, 20)
      'matrix_free'
    """
    if mode not in JACOBIAN_MODES:
        raise ValueError(
            f"`jacobian_mode` must be one of {JACOBIAN_MODES!r}, got {mode!r}"
        )
    if mode != "auto":
        return mode
    if n_params * n_residuals * itemsize > max_dense_bytes:
        return "matrix_free"
    if n_params <= n_residuals:
        return "forward"
    return "reverse" if n_params < 2 * n_residuals else "matrix_free"


def residual_and_jacobian(
    flat_residual_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    mode: str,
) -> tuple[jax.Array, jax.Array]:
    """``(r, J)`` of a function of a flat vector, in ``forward``/``reverse`` mode.

    Forward mode pushes the identity through one batched ``jvp`` (the model
    runs once with ``n`` tangents, which XLA fuses); reverse mode pulls the
    identity back through one batched ``vjp``.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> square = lambda p: p**2
      >>> r, J = jaxfit.residual_and_jacobian(square, jnp.array([1.0, 3.0]), 'forward')
      >>> J
      Array([[2., 0.],
             [0., 6.]], dtype=float32)
    """
    if mode == "forward":
        basis = jnp.eye(x.size, dtype=x.dtype)
        r, pushfwd = jax.linearize(flat_residual_fn, x)
        return r, jax.vmap(pushfwd, out_axes=1)(basis)
    if mode == "reverse":
        r, pullback = jax.vjp(flat_residual_fn, x)
        basis = jnp.eye(r.size, dtype=r.dtype)
        return r, jax.vmap(lambda c: pullback(c)[0])(basis)
    raise ValueError(f"dense Jacobian needs mode 'forward' or 'reverse', got {mode!r}")


def normal_matvec(
    flat_residual_fn: Callable[[jax.Array], jax.Array], x: jax.Array
) -> tuple[jax.Array, Callable[[jax.Array], jax.Array], Callable]:
    """Matrix-free ``(r, v -> J v, u -> J^T u)`` at ``x``, for CG solves.

    Example:
      >>> import jax.numpy as jnp, jaxfit
      >>> r, jv, jtu = jaxfit.normal_matvec(lambda p: 2 * p, jnp.ones(2))
      >>> jtu(jv(jnp.array([1.0, 0.0])))
      Array([4., 0.], dtype=float32)
    """
    r, jvp_fn = jax.linearize(flat_residual_fn, x)
    vjp_fn = jax.linear_transpose(jvp_fn, x)
    return r, jvp_fn, lambda u: vjp_fn(u)[0]
