"""Gauss-Newton and Levenberg-Marquardt transformations (vs NumPy and SciPy)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import jaxfit


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _exp_problem(n=40, outlier=False):
    x = np.linspace(0, 2, n)
    y = 3.0 * np.exp(-1.3 * x) + 0.5 + 0.01 * np.sin(7 * x)
    if outlier:
        y[5] += 4.0
    return jnp.asarray(x), jnp.asarray(y)


def _tree_residual(p, batch):
    x, y = batch
    return p["amp"] * jnp.exp(-p["rate"][0] * x) + p["rate"][1] - y


def _flat(p):
    return np.array([p["amp"], p["rate"][0], p["rate"][1]])


def _run(tx, params, batch, steps):
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(p, s, p, batch=batch))
    for _ in range(steps):
        updates, state = step(params, state)
        params = jaxfit.apply_updates(params, updates)
    return params, state


def _p0():
    # Explicit dtypes: jnp.array(1.0) would be weakly typed.
    return {
        "amp": jnp.array(1.0, jnp.float64),
        "rate": jnp.array([0.5, 0.0], jnp.float64),
    }


def test_gauss_newton_step_solves_a_linear_problem_exactly():
    rng = np.random.default_rng(0)
    A = jnp.asarray(rng.normal(size=(30, 4)))
    b = jnp.asarray(rng.normal(size=30))
    res = lambda p, batch: batch[0] @ jnp.concatenate([p["w"], p["b"]]) - batch[1]
    params = {"w": jnp.zeros(3), "b": jnp.zeros(1)}
    tx = jaxfit.scale_by_gauss_newton(res)
    updates, state = tx.update(params, tx.init(params), params, batch=(A, b))
    expected = np.linalg.lstsq(np.asarray(A), np.asarray(b), rcond=None)[0]
    got = np.concatenate([updates["w"], updates["b"]])
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    np.testing.assert_allclose(state.cost, 0.5 * np.sum(np.asarray(b) ** 2))


@pytest.mark.parametrize("mode", ["forward", "reverse", "matrix_free", "user"])
def test_gauss_newton_modes_give_the_same_step(mode):
    batch = _exp_problem()
    if mode == "user":
        jac = lambda p, b: jax.jacfwd(lambda f: _tree_residual(unravel(f), b))(
            jax.flatten_util.ravel_pytree(p)[0]
        )
        _, unravel = jax.flatten_util.ravel_pytree(_p0())
        tx = jaxfit.scale_by_gauss_newton(_tree_residual, jac=jac)
    else:
        tx = jaxfit.scale_by_gauss_newton(_tree_residual, jacobian_mode=mode)
    ref = jaxfit.scale_by_gauss_newton(_tree_residual)
    got, _ = tx.update(_p0(), tx.init(_p0()), _p0(), batch=batch)
    expected, _ = ref.update(_p0(), ref.init(_p0()), _p0(), batch=batch)
    np.testing.assert_allclose(_flat(got), _flat(expected), rtol=1e-6)


@pytest.mark.parametrize("loss", ["linear", "soft_l1", "cauchy"])
def test_levenberg_marquardt_reaches_scipy_least_squares_optimum(loss):
    batch = _exp_problem(outlier=True)
    tx = jaxfit.scale_by_levenberg_marquardt(_tree_residual, loss=loss, f_scale=0.2)
    params, state = _run(tx, _p0(), batch, 200)
    x, y = (np.asarray(a) for a in batch)
    fun = lambda q: q[0] * np.exp(-q[1] * x) + q[2] - y
    ref = scipy.optimize.least_squares(
        fun, _flat(_p0()), loss=loss, f_scale=0.2, xtol=1e-15, ftol=1e-15, gtol=1e-15
    )
    np.testing.assert_allclose(_flat(params), ref.x, rtol=1e-7)
    np.testing.assert_allclose(state.cost, ref.cost, rtol=1e-10)


@pytest.mark.parametrize("loss", ["cauchy", "arctan"])
def test_robust_lm_started_with_every_residual_an_outlier_converges(loss):
    # Beyond f_scale these losses reweight every row of J by sqrt(eps): a
    # Marquardt scale taken from that J was ~1e-15, the damping climbed to
    # ~1e16 before a step was accepted and later froze the fit far away.
    batch = _exp_problem()
    f_scale = 0.05
    x, y = (np.asarray(a) for a in batch)
    fun = lambda q: q[0] * np.exp(-q[1] * x) + q[2] - y
    assert np.all(np.abs(fun(_flat(_p0()))) > 3 * f_scale)
    ref = scipy.optimize.least_squares(
        fun, _flat(_p0()), loss=loss, f_scale=f_scale, xtol=1e-15, ftol=1e-15
    )
    tx = jaxfit.scale_by_levenberg_marquardt(_tree_residual, loss=loss, f_scale=f_scale)
    params, state = _p0(), tx.init(_p0())
    step = jax.jit(lambda p, s: tx.update(p, s, p, batch=batch))
    damping_on_the_way = []
    for _ in range(100):
        updates, state = step(params, state)
        params = jaxfit.apply_updates(params, updates)
        if state.cost > ref.cost * (1 + 1e-10):
            damping_on_the_way.append(float(state.damping))
    np.testing.assert_allclose(_flat(params), ref.x, rtol=1e-7)
    np.testing.assert_allclose(state.cost, ref.cost, rtol=1e-10)
    assert max(damping_on_the_way) < 1e3  # was ~1e16


def test_rejected_steps_return_zero_and_raise_damping():
    # Rosenbrock residuals from far away with almost no damping: the first
    # Gauss-Newton-like steps overshoot and must be rejected.
    res = lambda p, batch: jnp.stack([10 * (p[1] - p[0] ** 2), 1 - p[0]])
    tx = jaxfit.scale_by_levenberg_marquardt(res, init_damping=1e-9)
    params = jnp.array([-1.2, 1.0])
    state = tx.init(params)
    update = jax.jit(tx.update)  # eager, each lax.cond would compile anew
    rejected = 0
    for _ in range(60):
        updates, new_state = update(params, state, params)
        if not bool(new_state.accepted):
            rejected += 1
            np.testing.assert_array_equal(updates, 0.0)
            grown = float(new_state.damping) > float(state.damping)
            assert grown or float(new_state.damping) == 1e30  # the cap
            # A rejection reuses J^T J: only one residual evaluation.
            fresh = int(state.count) == 0 or bool(state.accepted)
            assert int(new_state.njev) == int(state.njev) + fresh
        else:
            assert float(new_state.cost) < float(state.cost) or state.count == 0
        params, state = params + updates, new_state
    assert rejected > 0
    np.testing.assert_allclose(params, [1.0, 1.0], atol=1e-8)


def test_state_avals_are_fixed_and_the_step_compiles_once(count_compilations):
    batch = _exp_problem()
    tx = jaxfit.scale_by_levenberg_marquardt(_tree_residual)
    state = tx.init(_p0())
    _, new_state = tx.update(_p0(), state, _p0(), batch=batch)
    assert jax.tree.map(jax.typeof, state) == jax.tree.map(jax.typeof, new_state)
    assert state.count.dtype == jnp.int32
    assert not any(jax.typeof(leaf).weak_type for leaf in jax.tree.leaves(state))

    @jax.jit
    def step(p, s, b):
        updates, s = tx.update(p, s, p, batch=b)
        return jaxfit.apply_updates(p, updates), s

    params = _p0()
    with count_compilations() as counter:
        for _ in range(5):
            params, state = step(params, state, batch)
    assert counter.count == 1


def test_scan_and_vmap_over_independent_problems():
    x, y = _exp_problem()
    ys = jnp.stack([y, 2 * y, y + 1.0])
    tx = jaxfit.scale_by_levenberg_marquardt(_tree_residual)

    def solve(y):
        def body(carry, _):
            p, s = carry
            u, s = tx.update(p, s, p, batch=(x, y))
            return (jaxfit.apply_updates(p, u), s), s.cost

        (p, _), _ = jax.lax.scan(body, (_p0(), tx.init(_p0())), None, length=40)
        return p

    batched = jax.jit(jax.vmap(solve))(ys)
    for i in range(3):
        single = solve(ys[i])
        np.testing.assert_allclose(
            _flat(jax.tree.map(lambda a, i=i: a[i], batched)), _flat(single), rtol=1e-9
        )
    # Scaling the data by 2 scales amp and offset by 2 at the optimum.
    np.testing.assert_allclose(batched["amp"][1], 2 * batched["amp"][0], rtol=1e-7)


def test_gauss_newton_chains_with_clipping_and_optax_line_search():
    batch = _exp_problem()
    loss = jaxfit.residual_loss(_tree_residual)
    tx = optax.chain(
        jaxfit.scale_by_gauss_newton(_tree_residual),
        jaxfit.clip_by_global_norm(5.0),
        optax.scale_by_backtracking_linesearch(max_backtracking_steps=30),
    )
    params = _p0()
    state = tx.init(params)
    for _ in range(30):
        value, grad = jax.value_and_grad(loss)(params, batch)
        updates, state = tx.update(
            grad, state, params, value=value, grad=grad, value_fn=loss, batch=batch
        )
        params = jaxfit.apply_updates(params, updates)
    lm_params, _ = _run(
        jaxfit.scale_by_levenberg_marquardt(_tree_residual), _p0(), batch, 60
    )
    np.testing.assert_allclose(_flat(params), _flat(lm_params), rtol=1e-7)


def test_levenberg_marquardt_chains_after_clipping_in_optax_chain():
    batch = _exp_problem()
    tx = optax.chain(
        jaxfit.scale_by_levenberg_marquardt(_tree_residual), optax.clip(10.0)
    )
    params, _ = _run(tx, _p0(), batch, 60)
    ref, _ = _run(jaxfit.scale_by_levenberg_marquardt(_tree_residual), _p0(), batch, 60)
    np.testing.assert_allclose(_flat(params), _flat(ref), rtol=1e-7)


def test_matrix_free_levenberg_marquardt_converges():
    batch = _exp_problem()
    tx = jaxfit.scale_by_levenberg_marquardt(
        _tree_residual, jacobian_mode="matrix_free"
    )
    params, state = _run(tx, _p0(), batch, 80)
    assert state.hessian.shape == (0, 0)
    ref, _ = _run(jaxfit.scale_by_levenberg_marquardt(_tree_residual), _p0(), batch, 60)
    np.testing.assert_allclose(_flat(params), _flat(ref), rtol=1e-6)


def test_bad_arguments_name_the_argument():
    res = lambda p, b: p
    with pytest.raises(ValueError, match="`loss`"):
        jaxfit.scale_by_levenberg_marquardt(res, loss="l1")
    with pytest.raises(ValueError, match="`f_scale`"):
        jaxfit.scale_by_gauss_newton(res, f_scale=-1.0)
    with pytest.raises(ValueError, match="`jacobian_mode`"):
        jaxfit.scale_by_gauss_newton(res, jacobian_mode="numeric")
    with pytest.raises(ValueError, match="`init_damping`"):
        jaxfit.scale_by_levenberg_marquardt(res, init_damping=0.0)
    with pytest.raises(ValueError, match="`jac`"):
        jaxfit.scale_by_levenberg_marquardt(res, jac="2-point")
    with pytest.raises(ValueError, match="`params`"):
        jaxfit.scale_by_levenberg_marquardt(res).init({"a": "x"})
    tx = jaxfit.scale_by_gauss_newton(res)
    with pytest.raises(ValueError, match="`params`"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


# Issue 12: from all ones, the terms of a sum of identical exponentials are
# interchangeable, so their Jacobian columns are identical, every exact step
# kept a = c, b = d and the fit ended at a saddle (the best single term, at
# ~140x the optimal cost) with an infinite pcov and only a warning.
_TERMS = {
    2: (np.linspace(0, 5, 50), [(3.0, 0.5), (1.0, 3.0)]),
    3: (np.linspace(0, 5, 100), [(2.0, 0.3), (1.0, 1.5), (1.0, 6.0)]),
}


def _two_terms(x, a, b, c, d):
    return a * jnp.exp(-b * x) + c * jnp.exp(-d * x)


def _three_terms(x, a, b, c, d, e, g):
    return _two_terms(x, a, b, c, d) + e * jnp.exp(-g * x)


def _terms_residual(p, batch):
    x, y = batch
    model = _two_terms if p.shape[0] == 4 else _three_terms
    return model(x, *p) - y


def _identical_terms(k):
    """``(x, y, cost)``: data of ``k`` exponentials and SciPy's optimal cost."""
    x, terms = _TERMS[k]
    noise = 0.01 * np.random.default_rng(0).normal(size=x.size)
    y = sum(a * np.exp(-b * x) for a, b in terms) + noise

    def fun(q):
        return sum(q[i] * np.exp(-q[i + 1] * x) for i in range(0, 2 * k, 2)) - y

    # SciPy escapes the symmetric start only through finite-difference
    # rounding; also started at the true terms, so this is the optimum.
    tight = dict(method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    starts = (np.ones(2 * k), np.ravel(terms))
    cost = min(scipy.optimize.least_squares(fun, p0, **tight).cost for p0 in starts)
    return jnp.asarray(x), jnp.asarray(y), cost


def _lm_until_converged(tx, params, batch, ftol=1e-8, max_steps=500):
    """A plain jitted LM loop, stopped by SciPy's ``ftol`` test."""
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(p, s, p, batch=batch))
    for _ in range(max_steps):
        updates, state = step(params, state)
        params = jaxfit.apply_updates(params, updates)
        base = state.cost + jnp.where(state.accepted, state.actual_reduction, 0.0)
        if (
            abs(state.actual_reduction) <= ftol * base
            and state.predicted_reduction <= ftol * base
        ):
            break
    return params, state


@pytest.mark.parametrize("k", [2, 3])
def test_lm_transformation_fits_identical_terms_from_a_symmetric_start(k):
    x, y, best = _identical_terms(k)
    tx = jaxfit.scale_by_levenberg_marquardt(_terms_residual)
    params, state = _lm_until_converged(tx, jnp.ones(2 * k), (x, y))
    assert float(state.cost) <= best * (1 + 1e-6)  # was ~100x best
    assert len(set(np.round(np.asarray(params[1::2]), 6))) == k  # distinct rates


@pytest.mark.parametrize("k", [2, 3])
def test_least_squares_solve_and_solve_many_fit_identical_terms(k):
    x, y, best = _identical_terms(k)
    sol = jaxfit.least_squares_solve(_terms_residual, jnp.ones(2 * k), (x, y))
    assert int(sol.status) > 0
    assert float(sol.cost) <= best * (1 + 1e-6)
    # Twice the data: the optimal cost is four times as large.
    many = jaxfit.least_squares_solve_many(
        _terms_residual,
        jnp.ones((2, 2 * k)),
        (jnp.stack([x, x]), jnp.stack([y, 2 * y])),
    )
    assert bool(jnp.all(many.status > 0))
    assert np.all(np.asarray(many.cost) <= np.array([1, 4]) * best * (1 + 1e-6))


@pytest.mark.parametrize("k", [2, 3])
def test_curve_fit_from_default_start_fits_identical_terms_with_finite_pcov(k):
    x, y, best = _identical_terms(k)
    model = _two_terms if k == 2 else _three_terms
    x, y = np.asarray(x), np.asarray(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.optimize.OptimizeWarning)
        popt, pcov = jaxfit.curve_fit(model, x, y)  # p0: SciPy's all ones
    cost = 0.5 * np.sum((np.asarray(model(x, *popt)) - y) ** 2)
    assert cost <= best * (1 + 1e-6)
    assert np.all(np.isfinite(pcov))


@pytest.mark.parametrize("k", [2, 3])
def test_gauss_newton_step_separates_tied_terms_within_the_linear_model(k):
    x, y, _ = _identical_terms(k)
    params = jnp.ones(2 * k)
    tx = jaxfit.scale_by_gauss_newton(_terms_residual)
    step, _ = tx.update(params, tx.init(params), params, batch=(x, y))
    J = jax.jacfwd(lambda p: _terms_residual(p, (x, y)))(params)
    r = _terms_residual(params, (x, y))
    min_norm = -np.linalg.pinv(np.asarray(J)) @ np.asarray(r)
    # Every pair of terms moves apart, by ~sqrt(eps) of the step...
    amplitudes = np.asarray(step[::2])
    gaps = np.abs(amplitudes[:, None] - amplitudes[None, :])[np.triu_indices(k, 1)]
    size = np.abs(np.asarray(step)).max()
    assert np.all((gaps > 1e-12 * size) & (gaps < 1e-6 * size))
    # ...inside the null space of J: the linearised residuals are unchanged.
    np.testing.assert_allclose(J @ step, J @ min_norm, rtol=1e-10, atol=1e-12)


def test_break_ties_moves_only_tied_columns_and_within_the_null_space():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 3))
    # Columns 0, 2, 4 identical; 3 = -2 * column 1; column 5 unused; 6 free.
    J = base[:, [0, 1, 0, 1, 0, 2, 2]] * np.array([1, 1, 1, -2, 1, 0, 1])
    step = jnp.asarray(rng.normal(size=7))
    moved = jaxfit.least_squares.break_ties(step, jnp.asarray(J.T @ J))
    move = np.asarray(moved - step)
    assert np.all(move[[1, 3]] != 0) and np.all(move[[5, 6]] == 0)
    assert len(set(move[[0, 2, 4]])) == 3  # the three copies all separate
    np.testing.assert_allclose(J @ move, 0.0, atol=1e-15)
    assert np.abs(move).max() < 1e-7 * np.abs(np.asarray(step)).max()
    again = jaxfit.least_squares.break_ties(step, jnp.asarray(J.T @ J))
    np.testing.assert_array_equal(moved, again)  # deterministic
    # At a stationary point (a zero step) nothing moves.
    zero = jnp.zeros(7)
    np.testing.assert_array_equal(
        jaxfit.least_squares.break_ties(zero, jnp.asarray(J.T @ J)), zero
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_step_too_large_caps_each_parameter_at_ten_times_its_size(dtype):
    too_large = jaxfit.least_squares.step_too_large
    x = jnp.asarray([1.0, 1.0], dtype)
    # BoxBOD's first step from (1, 1) sends b2 to ~100: rejected.
    assert bool(too_large(jnp.asarray([50.0, 103.0], dtype), x))
    assert not bool(too_large(jnp.asarray([19.0, -19.0], dtype), x))
    # A parameter started at zero may move by 10x the largest parameter.
    x = jnp.asarray([2.0, 0.0], dtype)
    assert not bool(too_large(jnp.asarray([0.0, 19.0], dtype), x))
    assert bool(too_large(jnp.asarray([0.0, 21.0], dtype), x))
    # No size to compare with at zero, and NaN steps are left to the gain ratio.
    assert not bool(too_large(jnp.asarray([1e9, 1e9], dtype), jnp.zeros(2, dtype)))
    assert not bool(too_large(jnp.full(2, jnp.nan, dtype), x))


def test_levenberg_marquardt_rejects_a_step_beyond_the_cap():
    # A line y = 100 x from (1, 1): the nearly undamped first step (slope
    # +99) lowers the cost but moves by ~50x the slope's size; the cap
    # rejects it and raises the damping, and the fit still gets there.
    x = jnp.linspace(0.0, 1.0, 11)
    res = lambda p, batch: p[0] + p[1] * batch[0] - batch[1]
    tx = jaxfit.scale_by_levenberg_marquardt(res)
    params = jnp.asarray([1.0, 1.0])
    state = tx.init(params)
    update = jax.jit(tx.update)
    updates, state = update(params, state, params, batch=(x, 100 * x))
    assert not bool(state.accepted) and float(state.damping) > 1e-3
    assert float(state.actual_reduction) > 0  # the cost would have dropped
    np.testing.assert_array_equal(updates, 0.0)
    for _ in range(40):
        updates, state = update(params, state, params, batch=(x, 100 * x))
        params = jaxfit.apply_updates(params, updates)
    np.testing.assert_allclose(params, [0.0, 100.0], atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_break_ties_returns_a_full_rank_step_bit_for_bit(dtype):
    rng = np.random.default_rng(1)
    for n in (1, 3, 8, 12):  # 12: J^T J by a matmul
        J = jnp.asarray(rng.normal(size=(30, n)), dtype)
        J = J.at[:, -1].set(J[:, 0] + 1e-2 * J[:, -1])  # ill-conditioned, not tied
        step = jnp.asarray(rng.normal(size=n), dtype)
        out = jaxfit.least_squares.break_ties(step, J.T @ J)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, step)


def test_full_rank_fits_are_unchanged_by_tie_breaking(monkeypatch):
    batch = _exp_problem(outlier=True)

    def run():
        lm, _ = _run(
            jaxfit.scale_by_levenberg_marquardt(_tree_residual, loss="soft_l1"),
            _p0(),
            batch,
            40,
        )
        gn, _ = _run(
            optax.chain(jaxfit.scale_by_gauss_newton(_tree_residual), optax.scale(0.5)),
            _p0(),
            batch,
            20,
        )
        return lm, gn

    with_ties = run()
    monkeypatch.setattr(
        jaxfit.least_squares.steps, "break_ties", lambda step, hessian: step
    )
    without = run()
    jax.tree.map(np.testing.assert_array_equal, with_ties, without)


# --- one engine, every driver: Gauss-Newton and the status table -------------

_EXP_X = np.linspace(0.0, 10.0, 30)
_EXP_Y = np.exp(0.5 * _EXP_X)


def _exp_residual(p, b):
    return jnp.exp(p[0] * b[0]) - b[1]


def _fit_in_both_drivers(method, p0):
    """``method`` from ``p0`` in the on-device loop and the streamed driver,
    both at the optimum: ``(solved, streamed)``."""
    data = (_EXP_X, _EXP_Y)
    solved = jaxfit.least_squares_solve(
        _exp_residual, jnp.array([p0]), data, method=method
    )
    streamed = jaxfit.fit_least_squares(
        _exp_residual, jnp.array([p0]), data, batch_size=10, method=method,
        progress=False,
    )  # fmt: skip
    np.testing.assert_allclose(solved.params, [0.5], rtol=1e-6)
    np.testing.assert_allclose(streamed.params, solved.params, rtol=1e-6)
    assert int(solved.status) > 0 and streamed.status > 0
    return solved, streamed


@pytest.mark.parametrize("p0", [0.4, 3.0])
def test_gauss_newton_runs_in_the_loop_and_the_streamed_driver_alike(p0):
    solved, streamed = _fit_in_both_drivers("gn", p0)
    lm = jaxfit.least_squares_solve(_exp_residual, jnp.array([p0]), (_EXP_X, _EXP_Y))
    # The same engine counts the same passes in both drivers.
    assert int(solved.nfev) == streamed.nfev
    # Undamped steps: fewer evaluations than LM's from a far start.
    assert int(solved.nfev) < int(lm.nfev)


def test_a_diverging_gauss_newton_step_stops_at_the_last_finite_point():
    data = (_EXP_X, _EXP_Y)
    p0 = jnp.array([-10.0])  # J ~ 0: the step overflows exp, float64 too
    solved = jaxfit.least_squares_solve(_exp_residual, p0, data, method="gn")
    streamed = jaxfit.fit_least_squares(
        _exp_residual, p0, data, batch_size=10, method="gn", progress=False
    )
    messages = jaxfit.least_squares.STATUS_MESSAGES
    assert int(solved.status) == streamed.status == -3
    assert streamed.message == messages[-3] == solved.message
    np.testing.assert_array_equal(solved.params, p0)
    np.testing.assert_array_equal(streamed.params, p0)
    assert np.isfinite(float(solved.cost)) and np.isfinite(streamed.cost)
    # LM from the same start reaches the optimum.
    lm = jaxfit.least_squares_solve(_exp_residual, p0, data)
    np.testing.assert_allclose(lm.params, [0.5], rtol=1e-6)


@pytest.mark.parametrize("method", ["gn", "tr"])
def test_solve_many_equals_one_at_a_time_for_every_method(method):
    ys = np.stack([_EXP_Y, np.exp(0.3 * _EXP_X)])
    many = jaxfit.least_squares_solve_many(
        _exp_residual, jnp.full((2, 1), 0.4), (np.stack([_EXP_X] * 2), ys),
        method=method,
    )  # fmt: skip
    for i, y in enumerate(ys):
        one = jaxfit.least_squares_solve(
            _exp_residual, jnp.array([0.4]), (_EXP_X, y), method=method
        )
        np.testing.assert_allclose(many.params[i], one.params, rtol=1e-6)
        assert int(many.nfev[i]) == int(one.nfev)


# --- the trust region: the step, the radius, every driver -------------------


def test_trust_region_step_is_gauss_newton_inside_and_on_the_boundary_outside():
    steps = jaxfit.least_squares.steps
    rng = np.random.default_rng(4)
    J = rng.normal(size=(12, 3)) * np.array([1.0, 30.0, 0.02])  # badly scaled
    A, g = jnp.asarray(J.T @ J), jnp.asarray(J.T @ rng.normal(size=12))
    zero, norms2 = jnp.zeros(3), jnp.diag(A)
    gauss_newton = -np.linalg.solve(J.T @ J, np.asarray(g))
    length = lambda step: float(jnp.linalg.norm(jnp.sqrt(norms2) * step))
    with jax.enable_x64(True):
        step, scale = steps.tr_proposal(A, g, 1e6, zero, norms2)
        np.testing.assert_allclose(step, gauss_newton, rtol=1e-10)
        np.testing.assert_array_equal(scale, norms2)
        radius = 0.1 * length(gauss_newton)
        step, _ = steps.tr_proposal(A, g, radius, zero, norms2)
    # On the boundary, and the damped step (J^T J + lam D^2) d = -g there.
    np.testing.assert_allclose(length(step), radius, rtol=1e-10)
    lam = -(np.asarray(g) + np.asarray(A) @ step) / (np.asarray(norms2) * step)
    np.testing.assert_allclose(lam, lam[0], rtol=1e-6)
    assert lam[0] > 0


@pytest.mark.parametrize(
    ("new_cost", "accepted", "radius"),
    [(9.0, True, 2.0), (9.9, True, 0.25), (10.5, False, 0.25)],
)
def test_trust_region_judgement_follows_scipy_trf(new_cost, accepted, radius):
    """A boundary step (``||D d|| = 1``) predicted to lower the cost by 0.75:
    a ratio over 3/4 doubles the radius, one under 1/4 (or a rise) makes it
    a quarter of the step; any fall in cost is taken."""
    steps = jaxfit.least_squares.steps
    A, g = jnp.eye(2), jnp.array([-1.0, -1.0])
    step, scale = jnp.array([0.5, 0.5]), jnp.full(2, 2.0)
    judged = steps.tr_judgement(10.0, new_cost, step, g, 1.0, scale, 2.0, None, A)
    actual, predicted, ratio, took, new_radius, _ = map(float, judged)
    assert predicted == pytest.approx(0.75)
    assert ratio == pytest.approx((10.0 - new_cost) / 0.75)
    assert bool(took) is accepted and actual == pytest.approx(10.0 - new_cost)
    assert new_radius == pytest.approx(radius)


@pytest.mark.parametrize("p0", [0.4, 3.0])
def test_trust_region_runs_in_the_loop_and_the_streamed_driver_alike(p0):
    solved, streamed = _fit_in_both_drivers("tr", p0)
    # The same steps: each accepted one is one Jacobian in the loop and one
    # pass for the normal equations in the streamed driver.
    assert int(solved.njev) + 1 == streamed.njev


# NIST StRD MGH10 (Meyer): data and certified values.
_MGH10_X = np.arange(50.0, 126.0, 5.0)
_MGH10_Y = np.array(
    [34780.0, 28610.0, 23650.0, 19630.0, 16370.0, 13720.0, 11540.0, 9744.0,
     8261.0, 7030.0, 6005.0, 5147.0, 4427.0, 3820.0, 3307.0, 2872.0]
)  # fmt: skip
_MGH10_OPTIMUM = [5.6096364710e-03, 6.1813463463e03, 3.4522363462e02]


def _mgh10(x, b1, b2, b3):
    return b1 * jnp.exp(b2 / (x + b3))


def test_curve_fit_retries_with_the_trust_region_when_lm_runs_out():
    """From NIST's start 1 LM creeps along MGH10's curved valley and spends
    its 400 evaluations; the trust region, from p0 with as many more (SciPy's
    default budget, 200 (n + 1), in all), reaches the certified optimum."""
    start = [2.0, 400000.0, 25000.0]
    fit = jaxfit.curve_fit(_mgh10, _MGH10_X, _MGH10_Y, p0=start, return_result=True)
    np.testing.assert_allclose(fit.popt, _MGH10_OPTIMUM, rtol=1e-6)
    assert 400 < fit.nfev <= 800 and fit.success
    # A budget the user gives is LM's alone, as SciPy's maxfev.
    with pytest.raises(RuntimeError, match="maximum number of function"):
        jaxfit.curve_fit(_mgh10, _MGH10_X, _MGH10_Y, p0=start, maxfev=400)
    # A fit LM finishes has no retry: NIST's start 2 in LM's evaluations.
    near = jaxfit.curve_fit(
        _mgh10, _MGH10_X, _MGH10_Y, p0=[0.02, 4000.0, 250.0], return_result=True
    )
    np.testing.assert_allclose(near.popt, _MGH10_OPTIMUM, rtol=1e-6)
    assert near.nfev <= 400


def test_every_result_speaks_one_vocabulary():
    x = np.linspace(0.0, 1.0, 20)
    y = 2.0 * np.exp(-1.5 * x)
    f = lambda x, a, k: a * jnp.exp(k * x)
    fitted = jaxfit.curve_fit(f, x, y, p0=[1.0, 0.0], return_result=True)
    solved = jaxfit.least_squares_solve(
        jaxfit.model_residual(f), jnp.array([1.0, 0.0]), {"x": x, "y": y}
    )
    streamed = jaxfit.fit_least_squares(
        lambda p, b: f(b[0], *p) - b[1], jnp.array([1.0, 0.0]), (x, y),
        batch_size=5, progress=False,
    )  # fmt: skip
    messages = jaxfit.least_squares.STATUS_MESSAGES
    for result in (fitted, solved, streamed):
        for name in ("params", "cost", "nfev", "njev", "status", "message"):
            assert hasattr(result, name), (type(result).__name__, name)
        assert result.message == messages[int(result.status)]
        np.testing.assert_allclose(np.asarray(result.params), [2.0, -1.5], rtol=1e-4)
    np.testing.assert_array_equal(fitted.params, fitted.popt)
