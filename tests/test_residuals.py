"""Residual losses, weights, masks and Jacobian strategy (vs SciPy and by hand)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize._lsq.common import scale_for_robust_loss_function
from scipy.optimize._lsq.least_squares import construct_loss_function

import jaxfit
from jaxfit import residuals

ROBUST = ("huber", "soft_l1", "cauchy", "arctan")


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _residuals():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(size=20), [0.0, 5.0, -40.0]])


@pytest.mark.parametrize("loss", ROBUST)
@pytest.mark.parametrize("f_scale", [1.0, 0.3, 7.0])
def test_robust_rho_and_cost_match_scipy(loss, f_scale):
    r = _residuals()
    expected = construct_loss_function(r.size, loss, f_scale)(r)
    z = jnp.square(r / f_scale)
    rho, d1, d2 = jaxfit.robust_rho(loss, z)
    # SciPy returns rho scaled by f_scale**2 and rho'' divided by it.
    np.testing.assert_allclose(rho * f_scale**2, expected[0], rtol=1e-12)
    np.testing.assert_allclose(d1, expected[1], rtol=1e-12)
    np.testing.assert_allclose(d2 / f_scale**2, expected[2], rtol=1e-12, atol=1e-300)
    cost = construct_loss_function(r.size, loss, f_scale)(r, cost_only=True)
    np.testing.assert_allclose(jaxfit.robust_cost(r, loss, f_scale), cost, rtol=1e-12)


@pytest.mark.parametrize("loss", ROBUST)
def test_robust_scaling_matches_scipy_reweighting(loss):
    r = _residuals()
    J = np.random.default_rng(1).normal(size=(r.size, 3))
    rho = construct_loss_function(r.size, loss, 2.0)(r)
    J_ref, r_ref = scale_for_robust_loss_function(J.copy(), r.copy(), rho)
    r_s, row = jaxfit.robust_scaling(jnp.asarray(r), loss, 2.0)
    np.testing.assert_allclose(r_s, r_ref, rtol=1e-12)
    np.testing.assert_allclose(row[:, None] * J, J_ref, rtol=1e-12)


def test_linear_loss_is_half_sum_of_squares():
    r = jnp.asarray(_residuals())
    np.testing.assert_allclose(jaxfit.robust_cost(r), 0.5 * jnp.sum(r**2))
    r_s, row = jaxfit.robust_scaling(r)
    np.testing.assert_array_equal(r_s, r)
    np.testing.assert_array_equal(row, 1.0)


def test_unknown_loss_names_the_argument():
    with pytest.raises(ValueError, match="`loss`"):
        jaxfit.robust_rho("l2", jnp.ones(2))
    with pytest.raises(ValueError, match="`loss`"):
        jaxfit.residual_loss(lambda p, b: p, loss="tukey")
    with pytest.raises(ValueError, match="`f_scale`"):
        jaxfit.residual_loss(lambda p, b: p, f_scale=0.0)


def test_huber_gradient_is_finite_at_zero_and_large_residuals():
    grad = jax.grad(lambda r: jaxfit.robust_cost(r, "huber"))(jnp.array([0.0, 1e3]))
    assert bool(jnp.all(jnp.isfinite(grad)))
    np.testing.assert_allclose(grad, [0.0, 1.0])


def test_sigma_weights_and_covariance_whitening():
    x = jnp.linspace(0, 1, 5)
    y = jnp.array([0.1, 0.3, 0.2, 0.5, 0.4])
    model = lambda x, a, b: a * x + b
    res = jaxfit.model_residual(model)
    p = jnp.array([0.5, 0.1])
    sigma = jnp.array([1.0, 2.0, 0.5, 1.0, 4.0])
    raw = model(x, *p) - y
    np.testing.assert_allclose(res(p, jaxfit.make_batch(x, y, sigma)), raw / sigma)
    # A 2-D covariance whitens by its Cholesky factor; a diagonal one agrees
    # with 1-D sigma, a full one gives r^T C^-1 r as the squared norm.
    diag = jaxfit.make_batch(x, y, jnp.diag(sigma**2))
    np.testing.assert_allclose(res(p, diag), raw / sigma, rtol=1e-12)
    a = np.random.default_rng(2).normal(size=(5, 5))
    cov = a @ a.T + 5 * np.eye(5)
    white = res(p, jaxfit.make_batch(x, y, cov))
    np.testing.assert_allclose(white @ white, raw @ np.linalg.solve(cov, raw))


def test_mask_zeroes_points_even_where_the_model_is_nan():
    x = jnp.array([1.0, 4.0, -1.0])
    y = jnp.ones(3)
    res = jaxfit.model_residual(lambda x, a: a * jnp.sqrt(x))
    batch = jaxfit.make_batch(x, y, mask=jnp.array([True, True, False]))
    np.testing.assert_allclose(res(jnp.array([1.0]), batch), [0.0, 1.0, 0.0])
    loss = jaxfit.residual_loss(res)
    np.testing.assert_allclose(loss(jnp.array([1.0]), batch), 0.5)
    # Derivatives through a NaN still poison the sum (0 * NaN), which is why
    # curve_fit pads with copies of a real data point, never with zeros.
    padded = jaxfit.make_batch(x.at[2].set(4.0), y, mask=batch["mask"])
    grad = jax.grad(loss)(jnp.array([1.0]), padded)
    np.testing.assert_allclose(grad, [2.0])


def test_make_batch_errors_name_the_argument():
    with pytest.raises(ValueError, match="`y`"):
        jaxfit.make_batch(jnp.ones(3), jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="`sigma`"):
        jaxfit.make_batch(jnp.ones(3), jnp.ones(3), sigma=jnp.ones(4))
    with pytest.raises(ValueError, match="`sigma`"):
        jaxfit.make_batch(jnp.ones(2), jnp.ones(2), sigma=-jnp.eye(2))
    with pytest.raises(ValueError, match="`mask`"):
        jaxfit.make_batch(jnp.ones(3), jnp.ones(3), mask=jnp.ones(2))
    with pytest.raises(ValueError, match="`model`"):
        jaxfit.model_residual("not a function")


def test_params_first_model_takes_a_pytree():
    res = jaxfit.model_residual(lambda p, x: p["a"] * x + p["b"], params_first=True)
    batch = jaxfit.make_batch(jnp.arange(3.0), jnp.zeros(3))
    out = res({"a": jnp.array(2.0), "b": jnp.array(1.0)}, batch)
    np.testing.assert_allclose(out, [1.0, 3.0, 5.0])


@pytest.mark.parametrize("loss", ("linear", *ROBUST))
def test_residual_loss_is_scipy_cost_and_a_line_search_value_fn(loss):
    res = jaxfit.model_residual(lambda x, a, k: a * jnp.exp(k * x))
    x = jnp.linspace(0, 1, 30)
    y = 2 * jnp.exp(-x) + jnp.where(jnp.arange(30) == 3, 5.0, 0.0)
    batch = jaxfit.make_batch(x, y)
    loss_fn = jaxfit.residual_loss(res, loss, 0.5)
    p = jnp.array([1.5, -0.5])
    r = np.asarray(res(p, batch))
    expected = construct_loss_function(r.size, loss, 0.5)
    expected = 0.5 * np.sum(r**2) if expected is None else expected(r, cost_only=True)
    np.testing.assert_allclose(loss_fn(p, batch), expected, rtol=1e-12)
    # Optax's line search calls value_fn(params, batch=...).
    tx = optax.scale_by_backtracking_linesearch(max_backtracking_steps=20)
    value, grad = jax.value_and_grad(loss_fn)(p, batch)
    updates, _ = tx.update(
        -grad, tx.init(p), p, value=value, grad=grad, value_fn=loss_fn, batch=batch
    )
    assert float(loss_fn(p + updates, batch)) < float(value)


def test_jacobian_mode_follows_the_shapes_and_can_be_forced():
    assert jaxfit.jacobian_mode(3, 1000) == "forward"
    assert jaxfit.jacobian_mode(5, 3) == "reverse"
    # From twice as many params as residuals the dense n x n solve dominates.
    assert jaxfit.jacobian_mode(6, 3) == "matrix_free"
    assert jaxfit.jacobian_mode(1000, 3) == "matrix_free"
    assert jaxfit.jacobian_mode(10**5, 10**5) == "matrix_free"
    assert jaxfit.jacobian_mode(10, 10, max_dense_bytes=100) == "matrix_free"
    assert jaxfit.jacobian_mode(3, 1000, "reverse") == "reverse"
    with pytest.raises(ValueError, match="`jacobian_mode`"):
        jaxfit.jacobian_mode(3, 3, "central")


@pytest.mark.parametrize("shape", [(3, 40), (40, 3)])
def test_forward_reverse_and_matrix_free_agree_with_jacfwd(shape):
    n, m = shape
    rng = np.random.default_rng(3)
    A = jnp.asarray(rng.normal(size=(m, n)))
    fn = lambda p: jnp.sin(A @ p) + p[0] ** 2
    x = jnp.asarray(rng.normal(size=n))
    expected = jax.jacfwd(fn)(x)
    for mode in ("forward", "reverse"):
        r, J = jaxfit.residual_and_jacobian(fn, x, mode)
        np.testing.assert_allclose(r, fn(x), rtol=1e-12)
        np.testing.assert_allclose(J, expected, rtol=1e-10, atol=1e-12)
    r, jv, jtu = jaxfit.normal_matvec(fn, x)
    v = jnp.asarray(rng.normal(size=n))
    np.testing.assert_allclose(jtu(jv(v)), expected.T @ (expected @ v), rtol=1e-10)
    with pytest.raises(ValueError, match="mode"):
        jaxfit.residual_and_jacobian(fn, x, "matrix_free")


def test_weight_and_mask_leaves_non_dict_batches_alone():
    r = jnp.arange(3.0)
    assert residuals.weight_and_mask(r, (1, 2)) is r


def test_make_batch_whitens_by_the_lower_triangle_of_sigma_as_scipy():
    # SciPy's curve_fit factors cholesky(sigma, lower=True): only the lower
    # triangle counts. This covariance is not symmetric (rows scaled).
    m = 12
    i = np.arange(m)
    sigma = (1 + i[:, None] / 4) * 0.5 ** np.abs(i[:, None] - i[None, :])
    with jax.enable_x64(True):
        batch = jaxfit.make_batch(np.zeros(m), np.ones(m), sigma)
    np.testing.assert_allclose(
        batch["scale_tril"], np.linalg.cholesky(np.tril(sigma) + np.tril(sigma, -1).T),
        rtol=1e-12, atol=1e-15,
    )  # fmt: skip
