"""Streamed full-data least squares: SciPy parity, sources, compiles, errors."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jaxfit
from jaxfit.curve_fit import OptimizeWarning

P0 = [1.0, 1.0, 0.0]


def model(x, a, k, c):
    return a * jnp.exp(-k * x) + c


def model_jac(x, a, k, c):  # analytic, so SciPy's pcov is not finite-differenced
    e = np.exp(-k * x)
    return np.stack([e, -a * x * e, np.ones_like(x)], axis=-1)


def residual(p, batch):
    x, y, w = batch
    return w * (model(x, *p) - y)


def make_data(m=1003, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 4, m)
    sigma = 0.05 * (1 + x)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + sigma * rng.normal(size=m)
    return x, y, sigma


def fit(data, **kwargs):
    kwargs = {"batch_size": 64, "chunk_batches": 4, "progress": False, **kwargs}
    with jax.enable_x64(True):
        return jaxfit.fit_least_squares(residual, jnp.array(P0), data, **kwargs)


@pytest.mark.parametrize("method", ["lm", "gn"])
def test_streamed_fit_equals_scipy_and_jaxfit_curve_fit(method):
    x, y, sigma = make_data()
    result = fit((x, y, 1 / sigma), method=method)
    popt, pcov = scipy.optimize.curve_fit(
        lambda x, a, k, c: a * np.exp(-k * x) + c,
        x,
        y,
        p0=P0,
        sigma=sigma,
        jac=model_jac,
        xtol=1e-12,
        ftol=1e-12,
    )
    assert result.success, result.message
    np.testing.assert_allclose(np.asarray(result.params), popt, rtol=1e-6)
    np.testing.assert_allclose(result.pcov, pcov, rtol=1e-6)
    jp, jcov = jaxfit.curve_fit(model, x, y, p0=P0, sigma=sigma)
    np.testing.assert_allclose(np.asarray(result.params), jp, rtol=1e-6)
    np.testing.assert_allclose(result.pcov, jcov, rtol=1e-6)
    assert result.num_residuals == x.size
    assert result.history["cost"].shape == (result.iterations,)


def test_robust_loss_and_absolute_sigma_match_jaxfit_curve_fit():
    x, y, sigma = make_data()
    y = y.copy()
    y[::50] += 2.0  # outliers
    kwargs = dict(loss="soft_l1", f_scale=2.0, absolute_sigma=True)
    result = fit((x, y, 1 / sigma), **kwargs)
    ref = jaxfit.curve_fit(
        model, x, y, p0=P0, sigma=sigma, return_result=True, **kwargs
    )
    np.testing.assert_allclose(np.asarray(result.params), ref.popt, rtol=1e-6)
    np.testing.assert_allclose(result.pcov, ref.pcov, rtol=1e-6)
    np.testing.assert_allclose(result.cost, ref.cost, rtol=1e-7)


def test_float64_data_stays_float64_through_the_prefetch_thread():
    # jax.enable_x64 is thread-local: the prefetch thread put float64 data on
    # the device as float32, so the cost was off by ~1e-6 relative.
    x, y, sigma = make_data(m=300)
    result = fit((x, y, 1 / sigma))
    a, k, c = np.asarray(result.params)
    cost = 0.5 * np.sum(((a * np.exp(-k * x) + c - y) / sigma) ** 2)
    np.testing.assert_allclose(result.cost, cost, rtol=1e-12)


def test_memmap_in_many_chunks_with_ragged_batch_equals_in_memory(tmp_path):
    x, y, sigma = make_data(m=1003)  # 1003 = 62 * 16 + 11: a ragged last batch
    arrays = {"x": x, "y": y, "w": 1 / sigma}
    for name, values in arrays.items():
        out = np.lib.format.open_memmap(tmp_path / f"{name}.npy", "w+", "<f8", (1003,))
        out[:] = values
        out.flush()
    mapped = tuple(np.load(tmp_path / f"{n}.npy", mmap_mode="r") for n in arrays)
    streamed = fit(mapped, batch_size=16, chunk_batches=5)  # 13 chunks
    whole = fit((x, y, 1 / sigma), batch_size=1003, chunk_batches=1)
    np.testing.assert_allclose(
        np.asarray(streamed.params), np.asarray(whole.params), rtol=1e-10
    )
    np.testing.assert_allclose(streamed.pcov, whole.pcov, rtol=1e-8)
    assert streamed.iterations == whole.iterations
    assert streamed.num_residuals == 1003


def test_iterable_and_npz_sources_with_dict_batches(tmp_path):
    x, y, sigma = make_data(m=300)
    res = lambda p, b: (model(b["x"], *p) - b["y"]) / b["s"]
    expected = None
    batches = [
        {"x": x[i : i + 64], "y": y[i : i + 64], "s": sigma[i : i + 64]}
        for i in range(0, 300, 64)
    ]
    np.savez(tmp_path / "data.npz", x=x, y=y, s=sigma)
    for data in (batches, str(tmp_path / "data.npz")):
        with jax.enable_x64(True):
            result = jaxfit.fit_least_squares(
                res, jnp.array(P0), data, batch_size=64, progress=False
            )
        if expected is None:
            expected = result
        np.testing.assert_allclose(
            np.asarray(result.params), np.asarray(expected.params), rtol=1e-10
        )
    jp, jcov = jaxfit.curve_fit(model, x, y, p0=P0, sigma=sigma)
    np.testing.assert_allclose(np.asarray(expected.params), jp, rtol=1e-6)
    np.testing.assert_allclose(expected.pcov, jcov, rtol=1e-6)


def test_pytree_params_and_float32_follow_the_params_dtype():
    x, y, _ = make_data(m=500)
    res = lambda p, b: p["a"] * jnp.exp(-p["k"] * b[0]) + p["c"] - b[1]
    params = {"a": jnp.float32(1.0), "k": jnp.float32(1.0), "c": jnp.float32(0.0)}
    result = jaxfit.fit_least_squares(
        res,
        params,
        (x.astype(np.float32), y.astype(np.float32)),
        batch_size=100,
        progress=False,
    )
    assert result.params["a"].dtype == jnp.float32
    np.testing.assert_allclose(float(result.params["k"]), 1.3, atol=0.05)


def test_second_call_compiles_nothing(count_compilations):
    x, y, sigma = make_data()
    fit((x, y, 1 / sigma))  # compiles
    x2, y2, s2 = make_data(m=901, seed=1)
    with count_compilations() as counter:
        fit((x, y, 1 / sigma))
        fit((x2, y2, 1 / s2), method="lm")
    assert counter.count == 0


def test_rank_deficient_problem_warns_and_gives_inf_pcov():
    x, y, _ = make_data(m=200)
    res = lambda p, b: p[0] + p[1] - b[1]  # only a + b is determined
    with pytest.warns(OptimizeWarning), jax.enable_x64(True):
        result = jaxfit.fit_least_squares(
            res, jnp.ones(2), (x, y), batch_size=50, method="gn", progress=False
        )
    assert np.all(np.isinf(result.pcov))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(method="trf"), "method"),
        (dict(loss="l2"), "loss"),
        (dict(f_scale=0.0), "f_scale"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=5000), "batch_size"),
        (dict(max_iterations=0), "max_iterations"),
        (dict(ftol=-1.0), "ftol"),
        (dict(init_damping=0.0), "init_damping"),
        (dict(jacobian_mode="matrix_free"), "jacobian_mode"),
        (dict(chunk_batches=0), "chunk_batches"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    x, y, sigma = make_data(m=100)
    with pytest.raises(ValueError, match=name):
        fit((x, y, 1 / sigma), **{"batch_size": 10, **kwargs})


def test_bad_residuals_and_data_raise_value_error():
    x, y, sigma = make_data(m=100)
    with pytest.raises(ValueError, match="residual_fn"):
        jaxfit.fit_least_squares(
            lambda p, b: jnp.sum(p), jnp.ones(3), (x, y), batch_size=10
        )
    with pytest.raises(ValueError, match="one-shot"):
        jaxfit.fit_least_squares(
            residual, jnp.ones(3), iter([(x, y, sigma)]), progress=False
        )
    with pytest.raises(ValueError, match="fewer than"):
        jaxfit.fit_least_squares(
            residual,
            jnp.ones(3),
            (x[:2], y[:2], sigma[:2]),
            batch_size=2,
            progress=False,
        )


def _identical_terms(k):
    """Issue 12: ``k`` exponentials, interchangeable from an all-ones start.

    Returns the residual, the data and SciPy's optimal cost.
    """
    x = np.linspace(0, 5, 50 * (k - 1))
    terms = [(3.0, 0.5), (1.0, 3.0)] if k == 2 else [(2.0, 0.3), (1.0, 1.5), (1.0, 6.0)]
    y = sum(a * np.exp(-b * x) for a, b in terms)
    y = y + 0.01 * np.random.default_rng(0).normal(size=x.size)

    def residual(p, batch):
        x, y = batch
        return sum(p[i] * jnp.exp(-p[i + 1] * x) for i in range(0, 2 * k, 2)) - y

    def fun(q):
        return sum(q[i] * np.exp(-q[i + 1] * x) for i in range(0, 2 * k, 2)) - y

    tight = dict(method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    starts = (np.ones(2 * k), np.ravel(terms))
    cost = min(scipy.optimize.least_squares(fun, p0, **tight).cost for p0 in starts)
    return residual, (x, y), cost


@pytest.mark.parametrize("k", [2, 3])
def test_streamed_lm_fits_identical_terms_from_a_symmetric_start(k):
    # Exact Jacobian columns of the k terms are identical at all ones: the
    # fit stayed at a = c, b = d (a saddle, ~100x the optimal cost).
    residual, data, best = _identical_terms(k)
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("error", OptimizeWarning)
        result = jaxfit.fit_least_squares(
            residual, jnp.ones(2 * k), data, batch_size=16, progress=False
        )
    assert result.success, result.message
    assert result.cost <= best * (1 + 1e-6)
    assert np.all(np.isfinite(result.pcov))


def test_streamed_gauss_newton_step_separates_identical_terms():
    residual, data, _ = _identical_terms(2)
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)  # still nearly tied
        result = jaxfit.fit_least_squares(
            residual,
            jnp.ones(4),
            data,
            batch_size=16,
            method="gn",
            max_iterations=1,
            progress=False,
        )
    a, b, c, d = np.asarray(result.params)
    step = np.abs(np.asarray(result.params) - 1).max()
    # Exact steps kept a = c, b = d (up to rounding); a tiny move parts them.
    assert 1e-12 * step < min(abs(a - c), abs(b - d))
    assert max(abs(a - c), abs(b - d)) < 1e-6 * step


def test_nan_data_is_blamed_on_the_data_not_the_params():
    x, y, sigma = make_data(300)
    y = y.copy()
    y[137] = np.nan
    with pytest.raises(ValueError, match="`data` contains NaN"):
        fit((x, y, 1 / sigma))


@pytest.mark.parametrize("name,value", [("ftol", np.nan), ("xtol", -1.0)])
def test_bad_tolerances_are_refused(name, value):
    x, y, sigma = make_data(300)
    with pytest.raises(ValueError, match=f"`{name}`"):
        fit((x, y, 1 / sigma), **{name: value})


def test_an_unhashable_residual_fn_fits_and_a_dropped_one_is_freed():
    import dataclasses
    import gc
    import weakref

    @dataclasses.dataclass
    class Residual:  # eq=True: not hashable
        scale: float

        def __call__(self, p, batch):
            return self.scale * residual(p, batch)

    x, y, sigma = make_data(300)
    fn = Residual(1.0)
    with jax.enable_x64(True):
        result = jaxfit.fit_least_squares(
            fn, jnp.array(P0), (x, y, 1 / sigma), batch_size=64, progress=False
        )
    np.testing.assert_allclose(
        np.asarray(result.params), np.asarray(fit((x, y, 1 / sigma)).params), 1e-8
    )
    ref = weakref.ref(fn)
    del fn
    gc.collect()
    assert ref() is None
