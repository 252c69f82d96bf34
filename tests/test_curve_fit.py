"""curve_fit against SciPy; the device loop, vmap, bounds, pcov, errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxfit

X = np.linspace(0, 10, 60)

# name: (jax model, numpy model, true params, far start)
PROBLEMS = {
    "exponential": (
        lambda x, a, k, c: a * jnp.exp(-k * x) + c,
        lambda x, a, k, c: a * np.exp(-k * x) + c,
        [5.0, 0.7, 1.0],
        [1.0, 0.01, 0.0],
    ),
    "rational": (
        lambda x, a, b, c: (a + b * x) / (1 + c * x),
        lambda x, a, b, c: (a + b * x) / (1 + c * x),
        [2.0, 3.0, 0.5],
        [1.0, 1.0, 1.0],
    ),
    "gaussian_peak": (
        lambda x, a, mu, s, c: a * jnp.exp(-0.5 * ((x - mu) / s) ** 2) + c,
        lambda x, a, mu, s, c: a * np.exp(-0.5 * ((x - mu) / s) ** 2) + c,
        [3.0, 6.0, 0.8, 0.2],
        [1.0, 4.5, 2.0, 0.0],
    ),
    "periodic": (
        lambda x, a, w, ph, c: a * jnp.sin(w * x + ph) + c,
        lambda x, a, w, ph, c: a * np.sin(w * x + ph) + c,
        [2.0, 1.3, 0.4, 0.5],
        [1.0, 1.2, 0.0, 0.0],
    ),
}


def _data(name, seed=0):
    _, fn, true, _ = PROBLEMS[name]
    rng = np.random.default_rng(seed)
    return fn(X, *true) + 0.05 * rng.normal(size=X.size)


def _reference(fn, y, start, **kwargs):
    """SciPy at its tightest, started at the optimum: the certified values."""
    return so.curve_fit(
        fn, X, y, p0=start, xtol=1e-15, ftol=1e-15, gtol=1e-15, **kwargs
    )


def _assert_pcov_close(pcov, ref, rtol):
    # Compare in units of the standard errors (small off-diagonals included).
    d = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
    np.testing.assert_allclose(pcov / d, ref / d, atol=rtol)


@pytest.mark.parametrize("name", PROBLEMS)
def test_far_start_reaches_scipy_certified_optimum_and_pcov(name):
    fj, fn, _, start = PROBLEMS[name]
    y = _data(name)
    popt, pcov = jaxfit.curve_fit(fj, X, y, p0=start)
    ref, ref_cov = _reference(fn, y, popt)
    np.testing.assert_allclose(popt, ref, rtol=1e-6)
    _assert_pcov_close(pcov, ref_cov, 1e-5)
    assert popt.dtype == np.float64 and isinstance(popt, np.ndarray)


def test_global_x64_flag_is_left_alone():
    fj, _, _, start = PROBLEMS["exponential"]
    before = jax.config.jax_enable_x64
    jaxfit.curve_fit(fj, X, _data("exponential"), p0=start)
    assert jax.config.jax_enable_x64 == before


@pytest.mark.parametrize("absolute_sigma", [False, True])
def test_sigma_1d_and_2d_match_scipy(absolute_sigma):
    fj, fn, true, _ = PROBLEMS["exponential"]
    y = _data("exponential", 1)
    sigma = 0.05 * (1 + X / 10)
    popt, pcov = jaxfit.curve_fit(
        fj, X, y, p0=true, sigma=sigma, absolute_sigma=absolute_sigma
    )
    ref, ref_cov = _reference(fn, y, popt, sigma=sigma, absolute_sigma=absolute_sigma)
    np.testing.assert_allclose(popt, ref, rtol=1e-7)
    _assert_pcov_close(pcov, ref_cov, 1e-5)
    idx = np.arange(X.size)
    cov = np.outer(sigma, sigma) * 0.3 ** np.abs(idx[:, None] - idx[None, :])
    popt, pcov = jaxfit.curve_fit(
        fj, X, y, p0=true, sigma=cov, absolute_sigma=absolute_sigma
    )
    ref, ref_cov = _reference(fn, y, popt, sigma=cov, absolute_sigma=absolute_sigma)
    np.testing.assert_allclose(popt, ref, rtol=1e-7)
    _assert_pcov_close(pcov, ref_cov, 1e-5)


@pytest.mark.parametrize("loss", ["soft_l1", "huber", "cauchy", "arctan"])
def test_robust_losses_match_scipy_trf(loss):
    fj, fn, true, _ = PROBLEMS["exponential"]
    y = _data("exponential", 2)
    y[[3, 17, 40]] += [3.0, -2.0, 4.0]
    res = jaxfit.curve_fit(
        fj, X, y, p0=true, loss=loss, f_scale=0.1, return_result=True, ftol=1e-12
    )
    ref, ref_cov = so.curve_fit(
        fn,
        X,
        y,
        p0=res.popt,
        method="trf",
        loss=loss,
        f_scale=0.1,
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    np.testing.assert_allclose(res.popt, ref, rtol=1e-6)
    _assert_pcov_close(res.pcov, ref_cov, 1e-4)


def test_bounds_are_respected_and_match_scipy_trf():
    fj, fn, _, _ = PROBLEMS["exponential"]
    y = _data("exponential")
    bounds = ([0.0, 0.0, 1.5], [10.0, 0.5, 3.0])  # the true k=0.7, c=1 are outside
    popt, pcov = jaxfit.curve_fit(fj, X, y, p0=[1.0, 0.1, 2.0], bounds=bounds)
    assert np.all(popt >= bounds[0]) and np.all(popt <= bounds[1])
    ref, _ = so.curve_fit(fn, X, y, p0=[1.0, 0.1, 2.0], bounds=bounds, method="trf")
    np.testing.assert_allclose(popt, ref, rtol=1e-4, atol=1e-6)
    # Inactive bounds: the unconstrained optimum and SciPy's pcov.
    popt, pcov = jaxfit.curve_fit(fj, X, y, p0=[1.0, 0.1, 2.0], bounds=(0, [20, 5, 5]))
    ref, ref_cov = _reference(fn, y, popt)
    np.testing.assert_allclose(popt, ref, rtol=1e-6)
    _assert_pcov_close(pcov, ref_cov, 1e-4)


def test_default_p0_from_the_signature_and_bounds():
    f = lambda x, a, b: a * x + b
    popt, _ = jaxfit.curve_fit(f, X, 2 * X + 1)
    np.testing.assert_allclose(popt, [2.0, 1.0], rtol=1e-9)
    popt, _ = jaxfit.curve_fit(f, X, 2 * X + 1, bounds=([0, 0], [5, 5]))
    np.testing.assert_allclose(popt, [2.0, 1.0], rtol=1e-6)


def test_return_result_fields():
    fj, fn, true, _ = PROBLEMS["exponential"]
    y = _data("exponential")
    res = jaxfit.curve_fit(fj, X, y, p0=true, return_result=True)
    assert res.success and res.status in (1, 2, 3, 4) and res.message
    assert res.nfev >= res.njev >= 1
    np.testing.assert_allclose(res.perr, np.sqrt(np.diag(res.pcov)))
    np.testing.assert_allclose(res.fun, fn(X, *res.popt) - y, atol=1e-12)
    np.testing.assert_allclose(res.cost, 0.5 * np.sum(res.fun**2))
    assert res.jac.shape == (X.size, 3)


def test_user_jacobian_is_used():
    f = lambda x, a, k: a * jnp.exp(-k * x)
    jac = lambda x, a, k: jnp.stack([jnp.exp(-k * x), -a * x * jnp.exp(-k * x)], 1)
    y = 3 * np.exp(-0.4 * X)
    popt, _ = jaxfit.curve_fit(f, X, y, p0=[1.0, 1.0], jac=jac)
    np.testing.assert_allclose(popt, [3.0, 0.4], rtol=1e-8)


def test_undetermined_covariance_is_inf_with_a_warning():
    f = lambda x, a, b: (a + b) * x  # only a + b is determined
    with pytest.warns(so.OptimizeWarning, match="Covariance"):
        popt, pcov = jaxfit.curve_fit(f, X, 2 * X + 0.01 * np.sin(X), p0=[1.0, 0.0])
    assert np.all(np.isinf(pcov))
    np.testing.assert_allclose(popt.sum(), 2.0, rtol=1e-3)


def test_nan_policy_omit_matches_dropping_points_and_raise_errors():
    fj, _, true, _ = PROBLEMS["exponential"]
    y = _data("exponential")
    y_nan = y.copy()
    y_nan[[4, 30]] = np.nan
    keep = np.isfinite(y_nan)
    popt, pcov = jaxfit.curve_fit(fj, X, y_nan, p0=true, nan_policy="omit")
    ref, ref_cov = jaxfit.curve_fit(fj, X[keep], y[keep], p0=true)
    np.testing.assert_allclose(popt, ref, rtol=1e-10)
    np.testing.assert_allclose(pcov, ref_cov, rtol=1e-8)
    with pytest.raises(ValueError, match="`ydata`"):
        jaxfit.curve_fit(fj, X, y_nan, p0=true)
    x_nan = X.copy()
    x_nan[2] = np.nan  # SciPy's 'raise' looks for NaN (inf passes, as in SciPy)
    with pytest.raises(ValueError, match="`xdata`"):
        jaxfit.curve_fit(fj, x_nan, y, p0=true, nan_policy="raise")


def test_bad_input_errors_name_the_argument():
    f = lambda x, a, b: a * x + b
    y = 2 * X + 1
    with pytest.raises(ValueError, match="`xdata`"):
        jaxfit.curve_fit(f, X[:10], y)
    # Exception types are SciPy's (tests/test_scipy_compat.py pins the texts).
    with pytest.raises(TypeError, match="`p0`"):
        jaxfit.curve_fit(f, X, y, p0=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"outside of provided bounds \(`p0`"):
        jaxfit.curve_fit(f, X, y, p0=[10.0, 1.0], bounds=(0, 5))
    with pytest.raises(ValueError, match="`bounds`"):
        jaxfit.curve_fit(f, X, y, bounds=(1, 0))
    with pytest.raises(TypeError, match="must not exceed"):
        jaxfit.curve_fit(f, X[:1], y[:1])
    with pytest.raises(ValueError, match="Method 'lm' only works"):
        jaxfit.curve_fit(f, X, y, bounds=(0, 5), method="lm")
    with pytest.raises(ValueError, match="`method`"):
        jaxfit.curve_fit(f, X, y, method="newton")
    with pytest.raises(ValueError, match="`sigma`"):
        jaxfit.curve_fit(f, X, y, sigma=np.ones(3))
    with pytest.raises(ValueError, match="`loss`"):
        jaxfit.curve_fit(f, X, y, loss="l1")
    with pytest.raises(ValueError, match="`nan_policy`"):
        jaxfit.curve_fit(f, X, y, nan_policy="drop")
    with pytest.raises(TypeError, match="unexpected keyword argument 'tol'"):
        jaxfit.curve_fit(f, X, y, tol=1e-3)
    with pytest.raises(ValueError, match="`x_scale` is not supported"):
        jaxfit.curve_fit(f, X, y, x_scale="jac")
    with pytest.raises(ValueError, match="`ydata` must not be empty"):
        jaxfit.curve_fit(f, [], [])
    with pytest.raises(ValueError, match="initial point"):
        jaxfit.curve_fit(lambda x, a: jnp.log(a) * x, X, y, p0=[-1.0])
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        jaxfit.curve_fit(
            PROBLEMS["gaussian_peak"][0],
            X,
            _data("gaussian_peak"),
            p0=[1.0, 4.5, 2.0, 0.0],
            max_nfev=3,
        )


def test_no_recompilation_for_repeats_and_lengths_in_one_bucket(count_compilations):
    f = lambda x, a, k: a * jnp.exp(-k * x)

    def fit(m):
        x = np.linspace(0, 3, m)
        return jaxfit.curve_fit(f, x, 2 * np.exp(-0.5 * x), p0=[1.0, 1.0])

    fit(100)  # compiles the bucket of 100 (104 points)
    with count_compilations() as counter:
        popt, _ = fit(100)
        fit(99)
        fit(97)
    assert counter.count == 0
    np.testing.assert_allclose(popt, [2.0, 0.5], rtol=1e-8)


def test_a_padded_fit_equals_the_exact_one_and_a_repeat_reads_no_signature(
    monkeypatch,
):
    """Padding rows are masked inside the program (from the number of real
    points it is passed): popt, pcov, cost and nfev equal those of the fit
    at the exact length. A repeat call takes the model's parameter count
    from a cache instead of inspecting its signature again."""
    f = lambda x, a, k, c: a * jnp.exp(-k * x) + c
    x = np.linspace(0, 4, 37)
    assert jaxfit._fit_data.bucket(37) > 37
    y = f(x, 2.5, 1.3, 0.5) + 0.01 * np.random.default_rng(3).normal(size=37)
    fit = functools.partial(
        jaxfit.curve_fit, f, x, y, p0=[1.0, 1.0, 0.0], return_result=True
    )
    padded, exact = fit(), fit(pad=False)
    np.testing.assert_allclose(padded.popt, exact.popt, rtol=1e-12)
    np.testing.assert_allclose(padded.pcov, exact.pcov, rtol=1e-9)
    assert padded.nfev == exact.nfev and padded.fun.shape == (37,)
    np.testing.assert_allclose(padded.cost, exact.cost, rtol=1e-12)

    def inspected(f):
        raise AssertionError("the signature was inspected again")

    monkeypatch.setattr(jaxfit._scipy_compat, "_count_params", inspected)
    np.testing.assert_array_equal(fit().popt, padded.popt)


def test_vmapped_solver_fits_many_datasets_at_once():
    f = lambda x, a, k, c: a * jnp.exp(-k * x) + c
    rng = np.random.default_rng(5)
    true = np.stack(
        [rng.uniform(1, 5, 32), rng.uniform(0.2, 2, 32), rng.normal(size=32)], 1
    )
    x = np.linspace(0, 5, 40)
    ys = np.stack([f(x, *p) for p in true]) + 0.01 * rng.normal(size=(32, 40))
    residual = jaxfit.model_residual(f)

    @jax.jit
    @jax.vmap
    def solve(y):
        batch = jaxfit.make_batch(x, y)
        return jaxfit.least_squares_solve(residual, jnp.ones(3), batch)

    with jax.enable_x64(True):
        sol = solve(ys)
    assert np.all(np.asarray(sol.status) > 0)
    for i in (0, 7, 31):
        popt, _ = jaxfit.curve_fit(f, x, ys[i], p0=[1.0, 1.0, 1.0])
        np.testing.assert_allclose(sol.params[i], popt, rtol=1e-6)


def test_reaches_nist_certified_optimum_where_scipy_lm_gives_up():
    # NIST StRD MGH09 (Kowalik-Osborne), "start 1": SciPy's lm spends its
    # maxfev budget (finite-difference Jacobians cost n evaluations each) and
    # raises; jaxfit's LM with autodiff Jacobians reaches the certified values.
    x = np.array([4, 2, 1, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])
    y = np.array([0.1957, 0.1947, 0.1735, 0.16, 0.0844, 0.0627, 0.0456])
    y = np.concatenate([y, [0.0342, 0.0323, 0.0235, 0.0246]])
    certified = [0.19280693458, 0.19128232873, 0.12305650693, 0.13606233068]
    certified_rss = 3.0750560385e-04

    def model(xp):
        return lambda x, b1, b2, b3, b4: b1 * (x**2 + x * b2) / (x**2 + x * b3 + b4)

    start = [25.0, 39.0, 41.5, 39.0]
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        so.curve_fit(model(np), x, y, p0=start)
    res = jaxfit.curve_fit(model(jnp), x, y, p0=start, return_result=True)
    assert res.success
    np.testing.assert_allclose(res.popt, certified, rtol=1e-3)
    np.testing.assert_allclose(2 * res.cost, certified_rss, rtol=1e-8)


def _decays(n_fits, m, seed):
    rng = np.random.default_rng(seed)
    true = np.stack(
        [
            rng.uniform(1, 5, n_fits),
            rng.uniform(0.2, 2, n_fits),
            rng.normal(size=n_fits),
        ],
        1,
    )
    x = np.linspace(0, 5, m)
    ys = true[:, :1] * np.exp(-true[:, 1:2] * x) + true[:, 2:]
    return np.broadcast_to(x, ys.shape), ys + 0.01 * rng.normal(size=ys.shape)


def test_solve_many_gives_each_fit_its_own_result_and_compiles_once(
    count_compilations,
):
    residual = jaxfit.model_residual(lambda x, a, k, c: a * jnp.exp(-k * x) + c)
    xs, ys = _decays(37, 30, seed=6)
    one = jax.jit(
        lambda x, y: jaxfit.least_squares_solve(
            residual, jnp.ones(3), jaxfit.make_batch(x, y)
        )
    )
    with jax.enable_x64(True):
        batch = {"x": xs, "y": ys}
        # One round of 2 iterations: nearly every fit goes on to later,
        # smaller rounds, which must resume exactly where it stopped.
        many = jaxfit.least_squares_solve_many(
            residual, np.ones((37, 3)), batch, round_iterations=2
        )
        with count_compilations() as counter:
            again = jaxfit.least_squares_solve_many(
                residual, np.ones((37, 3)), batch, round_iterations=2
            )
        alone = [one(xs[i], ys[i]) for i in range(37)]
    assert counter.count == 0
    np.testing.assert_array_equal(again.params, many.params)
    assert many.params.shape == (37, 3) and many.status.shape == (37,)
    assert np.all(np.asarray(many.status) > 0)
    for i, sol in enumerate(alone):
        np.testing.assert_allclose(many.params[i], sol.params, rtol=1e-9)
        assert int(many.iterations[i]) == int(sol.iterations)
        assert int(many.nfev[i]) == int(sol.nfev)


def test_solve_many_stops_a_hopeless_fit_without_holding_back_the_rest():
    # Fit 0 has a NaN in its data: it stops after its first iteration
    # (status -2) while the others converge in later rounds.
    residual = jaxfit.model_residual(lambda x, a, k, c: a * jnp.exp(-k * x) + c)
    xs, ys = _decays(4, 20, seed=7)
    ys = ys.copy()
    ys[0, 3] = np.nan
    with jax.enable_x64(True):
        sol = jaxfit.least_squares_solve_many(
            residual, np.ones((4, 3)), {"x": xs, "y": ys}, max_nfev=50
        )
    status = np.asarray(sol.status)
    assert status[0] == -2 and int(sol.iterations[0]) == 1
    assert np.all(status[1:] > 0)


def test_solve_many_bad_input_names_the_argument():
    residual = jaxfit.model_residual(lambda x, a: a * x)
    with pytest.raises(ValueError, match="leading axis of fits"):
        jaxfit.least_squares_solve_many(
            residual, np.ones((3, 1)), {"x": np.ones((4, 5)), "y": np.ones((4, 5))}
        )
    with pytest.raises(ValueError, match="round_iterations"):
        jaxfit.least_squares_solve_many(
            residual,
            np.ones((4, 1)),
            {"x": np.ones((4, 5)), "y": np.ones((4, 5))},
            round_iterations=0,
        )


def test_row_blocks_give_the_dense_fit_and_covariance():
    f = lambda x, a, k, c: a * jnp.exp(-k * x) + c
    x = np.linspace(0, 4, 1000)
    y = f(x, 2.0, 0.7, 0.3) + 0.01 * np.random.default_rng(8).normal(size=1000)
    sigma = np.full(1000, 0.01)
    kw = dict(p0=[1.0, 1.0, 0.0], sigma=sigma, return_result=True)
    dense = jaxfit.curve_fit(f, x, y, chunk_rows=0, **kw)
    blocks = jaxfit.curve_fit(f, x, y, chunk_rows=64, **kw)  # 1024 padded rows
    np.testing.assert_allclose(blocks.popt, dense.popt, rtol=1e-12)
    np.testing.assert_allclose(blocks.pcov, dense.pcov, rtol=1e-10)
    assert blocks.nfev == dense.nfev
    np.testing.assert_allclose(blocks.jac, dense.jac, rtol=1e-12)
    with pytest.raises(ValueError, match="chunk_rows"):
        jaxfit.curve_fit(f, x, y, p0=[1.0, 1.0, 0.0], chunk_rows=100)


def test_pointwise_proof_keeps_models_that_couple_points_whole():
    from jaxfit._pointwise import is_pointwise

    x, x2 = np.linspace(0, 1, 64), np.ones((2, 64))
    fixed = np.linspace(0, 1, 64)  # an array of the data's length
    with jax.enable_x64(True):
        assert is_pointwise(lambda x, a: a * jnp.exp(x), x, [1.0])
        assert is_pointwise(lambda x, a: a * x[0] + x[1] ** 2, x2, [1.0])
        assert is_pointwise(lambda x, a: jnp.polyval(jnp.stack([a, a]), x), x, [1.0])
        jac = lambda x, a: jnp.stack([jnp.exp(x), 0 * x], 1)
        assert is_pointwise(jac, x, [1.0], out_ndim=2)
        assert not is_pointwise(lambda x, a: a * x / x.max(), x, [1.0])
        assert not is_pointwise(lambda x, a: a * (x - x.mean()), x, [1.0])
        assert not is_pointwise(lambda x, a: a * x / len(x), x, [1.0])
        assert not is_pointwise(lambda x, a: a * jnp.cumsum(x), x, [1.0])
        assert not is_pointwise(lambda x, a: a * jnp.arange(x.size), x, [1.0])
        assert not is_pointwise(lambda x, a: a * x + fixed, x, [1.0])
        assert not is_pointwise(lambda x, a: a * jnp.roll(x, 1), x, [1.0])
        assert not is_pointwise(lambda x, a: a * x.sum(1)[0] + x[0], x2, [1.0])


def test_solve_many_shared_data_equals_repeating_it_per_fit():
    residual = jaxfit.model_residual(lambda x, a, k, c: a * jnp.exp(-k * x) + c)
    xs, ys = _decays(5, 25, seed=9)
    with jax.enable_x64(True):
        repeated = jaxfit.least_squares_solve_many(
            residual, np.ones((5, 3)), {"x": xs, "y": ys}
        )
        shared = jaxfit.least_squares_solve_many(
            residual, np.ones((5, 3)), {"y": ys}, shared={"x": xs[0]}
        )
    np.testing.assert_allclose(shared.params, repeated.params, rtol=1e-12)
    with pytest.raises(ValueError, match="`shared`"):
        jaxfit.least_squares_solve_many(
            residual, np.ones((5, 3)), (xs, ys), shared={"x": xs[0]}
        )


def _many_args():
    x = np.linspace(0, 1, 30)
    stacked = (np.stack([x] * 3), np.stack([2 * np.exp(-x)] * 3))
    return stacked


_RES = lambda p, b: p[0] * jnp.exp(-p[1] * b[0]) - b[1]
_X = np.linspace(0, 1, 30)
_Y = 2 * np.exp(-_X)
_F = lambda x, a, k: a * jnp.exp(-k * x)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: jaxfit.curve_fit(_F, _X, _Y, bounds=([0, np.nan], 10)), "`bounds`"),
        (lambda: jaxfit.curve_fit(_F, _X, _Y, ftol=-1.0), "`ftol`"),
        (lambda: jaxfit.curve_fit(_F, _X, _Y, xtol=np.nan), "`xtol`"),
        (lambda: jaxfit.curve_fit(_F, _X, _Y, gtol=-1e-8), "`gtol`"),
        (lambda: jaxfit.curve_fit(_F, _X, _Y, init_damping=-1.0), "`init_damping`"),
        (
            lambda: jaxfit.curve_fit(
                _F, _X, _Y, jac=lambda x, a, k: jnp.ones((x.size, 3))
            ),
            r"`jac\(xdata, \*p0\)` must return the \(30, 2\)",
        ),
        (
            lambda: jaxfit.curve_fit(_F, _X, _Y, sigma=np.diag(np.full(30, np.nan))),
            "`sigma`.*NaN",
        ),
        (
            lambda: jaxfit.least_squares_solve(_RES, jnp.ones(2), (_X, _Y), ftol=-1),
            "`ftol`",
        ),
        (
            lambda: jaxfit.least_squares_solve("res", jnp.ones(2), (_X, _Y)),
            "`residual_fn`",
        ),
        (
            lambda: jaxfit.least_squares_solve_many(
                _RES, jnp.ones((3, 2)), _many_args(), xtol=np.nan
            ),
            "`xtol`",
        ),
        (
            lambda: jaxfit.least_squares_solve_many(
                "res", jnp.ones((3, 2)), _many_args()
            ),
            "`residual_fn`",
        ),
        (
            lambda: jaxfit.least_squares_solve_many(_RES, jnp.ones(2), _many_args()),
            "`params0`.*leading axis of fits",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
