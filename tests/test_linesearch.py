"""Line searches: conditions, safeguards, compile-once, jit/scan/vmap, interop."""

from __future__ import annotations

import contextlib
import functools
import itertools

import chex
import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxfit

C1, C2 = 1e-4, 0.9

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

_COMPILES = [0]


def _on_duration(event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)


@contextlib.contextmanager
def count_compiles():
    """``with count_compiles() as n: ...`` then ``n[0]`` backend compilations."""
    result = [0]
    start = _COMPILES[0]
    try:
        yield result
    finally:
        result[0] = _COMPILES[0] - start


def counted(fn):
    """``fn`` that counts its (executed, not traced) calls in ``.calls[0]``."""
    calls = [0]

    def bump():
        calls[0] += 1

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        jax.debug.callback(bump)
        return fn(*args, **kwargs)

    wrapped.calls = calls
    return wrapped


def rosenbrock(w):
    return jnp.sum(100 * (w[1:] - w[:-1] ** 2) ** 2 + (1 - w[:-1]) ** 2)


def quadratic(w):
    scales = jnp.arange(1, w.size + 1, dtype=w.dtype)
    return 0.5 * jnp.sum(scales * w**2) + jnp.sum(jnp.sin(w))


def expsum(w):
    return jnp.sum(jnp.exp(w) - 2 * w) + 0.1 * jnp.sum(w**4)


def avals(tree):
    """(shape, dtype, weak_type) of every leaf, for arrays or eval_shape output."""

    def aval(x):
        weak = x.weak_type if isinstance(x, jax.ShapeDtypeStruct) else None
        weak = jax.typeof(x).weak_type if weak is None else weak
        return tuple(x.shape), jnp.dtype(x.dtype), weak

    return jax.tree.map(aval, tree)


def search_once(tx, fn, params, direction):
    """One update of ``tx`` along ``direction``; returns (updates, state)."""
    value, grad = jax.value_and_grad(fn)(params)
    return tx.update(
        direction, tx.init(params), params, value=value, grad=grad, value_fn=fn
    )


def make_step(tx, fn, *, from_state=False):
    """A jitted full-batch step ``(params, state) -> (params, state)``."""
    value_and_grad = jaxfit.value_and_grad_from_state(fn) if from_state else None

    @jax.jit
    def step(params, state):
        if from_state:
            value, grad = value_and_grad(params, state=state)
        else:
            value, grad = jax.value_and_grad(fn)(params)
        updates, state = tx.update(
            grad, state, params, value=value, grad=grad, value_fn=fn
        )
        return optax.apply_updates(params, updates), state

    return step


def run_scan(tx, fn, params, num_steps, *, from_state=True):
    """``num_steps`` steps in one ``lax.scan``; returns (params, state)."""
    value_and_grad = jaxfit.value_and_grad_from_state(fn)

    @jax.jit
    def run(params):
        def body(carry, _):
            params, state = carry
            if from_state:
                value, grad = value_and_grad(params, state=state)
            else:
                value, grad = jax.value_and_grad(fn)(params)
            updates, state = tx.update(
                grad, state, params, value=value, grad=grad, value_fn=fn
            )
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(body, (params, tx.init(params)), length=num_steps)[0]

    return run(params)


def backtracking(**kw):
    return jaxfit.scale_by_backtracking_linesearch(30, **kw)


def zoom(**kw):
    return jaxfit.scale_by_zoom_linesearch(30, **kw)


LINESEARCHES = {
    "backtracking": backtracking,
    "backtracking_store_grad": lambda **kw: backtracking(store_grad=True, **kw),
    "zoom": zoom,
}


# ---------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------


def test_factories_return_extra_args_transformations():
    for tx in (
        backtracking(),
        zoom(),
        jaxfit.lbfgs(),
        jaxfit.chain(optax.sgd(1.0), zoom()),
    ):
        assert isinstance(tx, optax.GradientTransformationExtraArgs)


BAD_ARGUMENTS = [
    (jaxfit.scale_by_backtracking_linesearch, {"max_backtracking_steps": 0}),
    (jaxfit.scale_by_backtracking_linesearch, {"max_backtracking_steps": -3}),
    (jaxfit.scale_by_backtracking_linesearch, {"max_backtracking_steps": 2.5}),
    (jaxfit.scale_by_backtracking_linesearch, {"max_backtracking_steps": True}),
    (backtracking, {"slope_rtol": -0.1}),  # 0 is plain decrease, as Optax
    (backtracking, {"slope_rtol": 1.0}),
    (backtracking, {"decrease_factor": 0.0}),
    (backtracking, {"decrease_factor": 1.0}),
    (backtracking, {"increase_factor": -0.5}),  # Optax accepts any factor >= 0
    (backtracking, {"max_learning_rate": 0.0}),
    (backtracking, {"max_learning_rate": float("nan")}),
    (backtracking, {"atol": -1.0}),
    (backtracking, {"rtol": -1e-3}),
    (backtracking, {"descent_safeguard": "ignore"}),
    (backtracking, {"has_aux": "yes"}),
    (jaxfit.scale_by_zoom_linesearch, {"max_linesearch_steps": 0}),
    (zoom, {"max_learning_rate": -1.0}),
    (zoom, {"increase_factor": 1.0}),
    (zoom, {"increase_factor": float("inf")}),
    (zoom, {"slope_rtol": 1.5}),
    (zoom, {"curv_rtol": float("nan")}),  # up to inf (no curvature), as Optax
    (zoom, {"curv_rtol": 1e-5}),  # below slope_rtol
    (zoom, {"approx_dec_rtol": -1e-6}),
    (zoom, {"stepsize_precision": -1.0}),
    (zoom, {"initial_guess_strategy": "two"}),
    (zoom, {"descent_safeguard": None}),
    (jaxfit.lbfgs, {"memory_size": 0}),
    (jaxfit.lbfgs, {"linesearch": jaxfit.scale_by_zoom_linesearch}),
]


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    BAD_ARGUMENTS,
    ids=[f"{f.__name__}-{next(iter(kw))}" for f, kw in BAD_ARGUMENTS],
)
def test_bad_arguments_raise_value_error_naming_the_argument(factory, kwargs):
    (name,) = kwargs
    with pytest.raises(ValueError, match=f"`{name}`"):
        factory(**kwargs)


@pytest.mark.parametrize("name", list(LINESEARCHES))
def test_init_rejects_params_that_are_not_float_arrays(name):
    tx = LINESEARCHES[name]()
    with pytest.raises(ValueError, match="params"):
        tx.init({"w": jnp.arange(3)})
    with pytest.raises(ValueError, match="params"):
        tx.init({})


# ---------------------------------------------------------------------------
# Sufficient decrease and strong Wolfe, against SciPy
# ---------------------------------------------------------------------------


@jax.jit
def _quadratic_problem_search(matrix, x, direction):
    """Both line searches on ``0.5 x^T A x + sum(sin x)`` along ``direction``."""

    def fn(w):
        return 0.5 * w @ matrix @ w + jnp.sum(jnp.sin(w))

    results = []
    # Directions up to 1e3 long need steps near 1e-4: halving reaches them
    # within the 30 trials (0.8**30 would stop near 1e-3 and fail Armijo).
    for tx in (backtracking(decrease_factor=0.5), zoom()):
        updates, state = search_once(tx, fn, x, direction)
        results.append((fn(x + updates), state))
    value, grad = jax.value_and_grad(fn)(x)
    slope0 = grad @ direction
    step = results[1][1].learning_rate
    slope_zoom = jax.grad(fn)(x + step * direction) @ direction
    return value, slope0, results, slope_zoom


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3))
def test_accepted_steps_satisfy_armijo_and_strong_wolfe(seed, scale):
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(5, 5))
    matrix = jnp.asarray(factor @ factor.T + 5 * np.eye(5), jnp.float32)
    x = jnp.asarray(rng.normal(size=5), jnp.float32)
    grad = jax.grad(lambda w: 0.5 * w @ matrix @ w + jnp.sum(jnp.sin(w)))(x)
    direction = -scale * grad / jnp.linalg.norm(grad)
    value, slope0, results, slope_zoom = _quadratic_problem_search(matrix, x, direction)
    (bt_value, bt_state), (zoom_value, zoom_state) = results
    assert slope0 < 0
    assert bool(bt_state.info.conditions_met)
    t = bt_state.learning_rate
    assert bt_value <= value + C1 * t * slope0 + 1e-5 * abs(value)
    assert bool(zoom_state.info.conditions_met)
    t = zoom_state.learning_rate
    assert zoom_value <= value + C1 * t * slope0 + 1e-5 * abs(value)
    assert abs(slope_zoom) <= C2 * abs(slope0) * (1 + 1e-3)


PROBLEMS = {"rosenbrock": rosenbrock, "quadratic": quadratic, "expsum": expsum}


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_zoom_steps_match_scipy_line_search(problem):
    fn = PROBLEMS[problem]
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        tx = jaxfit.scale_by_zoom_linesearch(30, initial_guess_strategy="one")
        search = jax.jit(lambda x, d: search_once(tx, fn, x, d)[1])
        grad_fn = jax.jit(jax.grad(fn))
        for _ in range(4):
            x = jnp.asarray(rng.normal(size=4))
            grad = grad_fn(x)
            for direction in (-grad, -5 * grad / jnp.linalg.norm(grad)):
                state = search(x, direction)
                calls = [0]

                def f(z, calls=calls):
                    calls[0] += 1
                    return float(fn(jnp.asarray(z)))

                step, *_ = scipy.optimize.line_search(
                    f,
                    lambda z: np.asarray(grad_fn(jnp.asarray(z))),
                    np.asarray(x),
                    np.asarray(direction),
                    gfk=np.asarray(grad),
                    old_fval=float(fn(x)),
                    c1=C1,
                    c2=C2,
                )
                assert step is not None
                assert bool(state.info.conditions_met)
                np.testing.assert_allclose(state.learning_rate, step, rtol=1e-9)
                assert int(state.info.num_evaluations) <= calls[0]


def test_backtracking_matches_optax_on_sgd_steps():
    """Same Armijo rule and step schedule as Optax where both succeed."""
    w0 = jnp.array([-1.2, 1.0, 0.5])
    results = []
    for ls in (
        jaxfit.scale_by_backtracking_linesearch(40),
        optax.scale_by_backtracking_linesearch(40),
    ):
        tx = optax.chain(optax.sgd(1.0), ls)
        w, state = w0, tx.init(w0)
        step = make_step(tx, rosenbrock)
        for _ in range(15):
            w, state = step(w, state)
        results.append(w)
    chex.assert_trees_all_close(*results, rtol=1e-5)


# ---------------------------------------------------------------------------
# Compile once: fixed avals, jit, scan, vmap
# ---------------------------------------------------------------------------

AVAL_CASES = {
    **LINESEARCHES,
    "lbfgs": lambda: jaxfit.lbfgs(),
    "sgd_zoom_chain": lambda: jaxfit.chain(optax.sgd(0.1), zoom()),
}


AVAL_PARAMS = [(name, "float32") for name in AVAL_CASES] + [
    (name, dtype)
    for name in ("backtracking_store_grad", "zoom")
    for dtype in ("float64", "bfloat16")
]


@pytest.mark.parametrize(("name", "dtype"), AVAL_PARAMS)
def test_state_avals_identical_after_init_and_update(name, dtype):
    with jax.enable_x64(dtype == "float64"):
        params = {"a": jnp.ones(3, dtype), "b": (jnp.full((2, 2), 0.5, dtype),)}

        def fn(p):
            return jnp.sum(p["a"] ** 2) + jnp.sum(jnp.cos(p["b"][0]))

        tx = AVAL_CASES[name]()
        state = tx.init(params)
        value, grad = jax.value_and_grad(fn)(params)
        # Tracing is enough to get the avals (and much faster than compiling).
        _, new_state = jax.eval_shape(
            lambda s: tx.update(grad, s, params, value=value, grad=grad, value_fn=fn),
            state,
        )
        assert avals(state) == avals(new_state)
        scalar = jnp.dtype("float32" if dtype == "bfloat16" else dtype)
        info = jaxfit.LinesearchInfo(*jax.tree.leaves(new_state)[-7:])
        assert info.num_evaluations.dtype == jnp.int32
        assert info.conditions_met.dtype == jnp.bool_
        assert info.decrease_error.dtype == scalar


@pytest.mark.parametrize("name", ["backtracking_store_grad", "zoom", "lbfgs"])
def test_jitted_step_compiles_once(name):
    chex.clear_trace_counter()  # the counter is per function code, not object
    tx = AVAL_CASES[name]()
    fn = rosenbrock
    value_and_grad = jaxfit.value_and_grad_from_state(fn)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        value, grad = value_and_grad(params, state=state)
        direction = grad if name == "lbfgs" else jax.tree.map(jnp.negative, grad)
        updates, state = tx.update(
            direction, state, params, value=value, grad=grad, value_fn=fn
        )
        return optax.apply_updates(params, updates), state

    params = jnp.array([-1.2, 1.0])
    state = tx.init(params)
    params, state = step(params, state)  # compiles
    with count_compiles() as compiles:
        for _ in range(5):
            params, state = step(params, state)
    assert compiles[0] == 0
    assert step._cache_size() == 1


def test_scan_over_steps_converges_on_rosenbrock_2d():
    params, state = run_scan(jaxfit.lbfgs(), rosenbrock, jnp.array([-1.2, 1.0]), 60)
    chex.assert_trees_all_close(params, jnp.ones(2), atol=1e-3)
    assert bool(state[-1].info.conditions_met)


@pytest.mark.parametrize("name", ["backtracking", "zoom"])
def test_stochastic_armijo_in_scan_over_minibatches(name):
    """The search runs on the current batch: Armijo holds batch by batch."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 16, 3)), jnp.float32)
    w_true = jnp.array([1.0, -2.0, 0.5])
    y = x @ w_true + 0.01 * jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)

    def loss(params, batch):
        xb, yb = batch
        return jnp.mean((xb @ params - yb) ** 2)

    tx = jaxfit.chain(optax.sgd(1.0), LINESEARCHES[name]())

    @jax.jit
    def epoch(params, state):
        def body(carry, batch):
            params, state = carry
            value, grad = jax.value_and_grad(loss)(params, batch)
            updates, state = tx.update(
                grad,
                state,
                params,
                value=value,
                grad=grad,
                value_fn=loss,
                batch=batch,
                residual_weights=jnp.ones(3),  # not for value_fn: ignored
            )
            new_params = optax.apply_updates(params, updates)
            slope = -jnp.sum(grad**2)
            armijo = (
                loss(new_params, batch)
                <= value + C1 * state[1].learning_rate * (slope) + 1e-6 * value
            )
            return (new_params, state), (armijo, state[1].info.conditions_met)

        return jax.lax.scan(body, (params, state), (x, y))

    params = jnp.zeros(3)
    state = tx.init(params)
    for _ in range(3):
        (params, state), (armijo, met) = epoch(params, state)
        assert bool(jnp.all(armijo)) and bool(jnp.all(met))
    assert epoch._cache_size() == 1
    chex.assert_trees_all_close(params, w_true, atol=0.05)


@pytest.mark.parametrize("name", ["backtracking", "zoom"])
def test_vmap_over_independent_problems_matches_one_by_one(name):
    curvatures = jnp.array([0.1, 1.0, 10.0, 300.0])
    centers = jnp.array([[1.0, 2.0], [-1.0, 0.5], [3.0, 3.0], [0.0, -1.0]])

    def loss(w, curvature, center):
        return curvature * jnp.sum((w - center) ** 2) + jnp.sum(jnp.cos(w))

    tx = jaxfit.chain(optax.sgd(1.0), LINESEARCHES[name]())

    def solve(curvature, center):
        fn = functools.partial(loss, curvature=curvature, center=center)
        w = jnp.zeros(2)
        state = tx.init(w)
        value, grad = jax.value_and_grad(fn)(w)
        updates, state = tx.update(grad, state, w, value=value, grad=grad, value_fn=fn)
        return w + updates, state[1]

    batched = jax.jit(jax.vmap(solve))(curvatures, centers)
    one_by_one = jax.jit(solve)
    for i in range(len(curvatures)):
        single = one_by_one(curvatures[i], centers[i])
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, i=i: x[i], batched), single, rtol=1e-6
        )
    # Different problems needed different numbers of trials.
    assert len(set(np.asarray(batched[1].info.num_evaluations).tolist())) > 1


# ---------------------------------------------------------------------------
# Extra arguments, aux, monitoring
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["backtracking_store_grad", "zoom"])
def test_has_aux_value_fn_gives_the_same_step(name):
    def fn(w):
        return rosenbrock(w)

    def fn_aux(w):
        return rosenbrock(w), {"residual": w[1:] - w[:-1] ** 2}

    w = jnp.array([-1.2, 1.0])
    value, grad = jax.value_and_grad(fn)(w)

    def update(tx, value_fn):
        return tx.update(
            -grad, tx.init(w), w, value=value, grad=grad, value_fn=value_fn
        )

    plain, _ = update(LINESEARCHES[name](), fn)
    with_aux, _ = update(LINESEARCHES[name](has_aux=True), fn_aux)
    chex.assert_trees_all_close(plain, with_aux)
    with pytest.raises(TypeError, match="has_aux=True"):
        update(LINESEARCHES[name](), fn_aux)
    with pytest.raises(TypeError, match=r"\(value, aux\)"):
        update(LINESEARCHES[name](has_aux=True), fn)


def test_value_fn_receives_only_the_extra_arguments_it_accepts():
    seen = {}

    def fn(w, batch, *, scale=1.0):
        seen["kwargs"] = (batch.shape, scale)
        return scale * jnp.sum((w - batch) ** 2)

    w, batch = jnp.zeros(2), jnp.ones(2)
    value, grad = jax.value_and_grad(fn)(w, batch)
    tx = zoom()
    updates, _ = tx.update(
        -grad,
        tx.init(w),
        w,
        value=value,
        grad=grad,
        value_fn=fn,
        batch=batch,
        unrelated=jnp.zeros(7),
    )
    assert seen["kwargs"] == ((2,), 1.0)
    chex.assert_trees_all_close(w + updates, batch, atol=1e-6)

    def fn_kwargs(w, **kwargs):
        seen["names"] = sorted(kwargs)
        return jnp.sum((w - kwargs["batch"]) ** 2)

    tx.update(
        -grad, tx.init(w), w, value=value, grad=grad, value_fn=fn_kwargs, batch=batch
    )
    assert seen["names"] == ["batch"]


@pytest.mark.parametrize("name", list(LINESEARCHES))
def test_state_reports_step_size_and_evaluations(name):
    fn = counted(rosenbrock)
    tx = LINESEARCHES[name]()
    w = jnp.array([-1.2, 1.0])
    value, grad = jax.value_and_grad(rosenbrock)(w)

    @jax.jit
    def update(state):
        return tx.update(-grad, state, w, value=value, grad=grad, value_fn=fn)

    updates, state = update(tx.init(w))
    jax.effects_barrier()
    assert int(state.info.num_evaluations) == fn.calls[0] > 1
    assert int(state.info.total_evaluations) == fn.calls[0]
    assert bool(state.info.conditions_met)
    assert bool(state.info.descent_direction)
    chex.assert_trees_all_close(updates, -state.learning_rate * grad, rtol=1e-6)
    np.testing.assert_allclose(state.value, rosenbrock(w + updates), rtol=1e-5)
    assert float(state.value) < float(value)
    _, state = update(state)
    jax.effects_barrier()
    assert int(state.info.total_evaluations) == fn.calls[0]


# ---------------------------------------------------------------------------
# Safeguards: non-descent directions, non-finite values, failures
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(LINESEARCHES))
def test_ascent_direction_falls_back_to_rescaled_negative_gradient(name):
    w = jnp.array([-1.2, 1.0])
    value, grad = jax.value_and_grad(rosenbrock)(w)
    ascent = 0.01 * grad / jnp.linalg.norm(grad)
    updates, state = search_once(LINESEARCHES[name](), rosenbrock, w, ascent)
    assert not bool(state.info.descent_direction)
    assert bool(state.info.conditions_met)
    assert float(rosenbrock(w + updates)) < float(value)
    # Along -grad: the updates are anti-parallel to the gradient.
    cosine = jnp.dot(updates, grad) / (jnp.linalg.norm(updates) * jnp.linalg.norm(grad))
    np.testing.assert_allclose(cosine, -1.0, rtol=1e-5)


@pytest.mark.parametrize("name", list(LINESEARCHES))
def test_skip_safeguard_takes_no_step_for_an_ascent_direction(name):
    w = jnp.array([-1.2, 1.0])
    grad = jax.grad(rosenbrock)(w)
    tx = LINESEARCHES[name](descent_safeguard="skip")
    updates, state = search_once(tx, rosenbrock, w, grad)
    chex.assert_trees_all_equal(updates, jnp.zeros(2))
    assert int(state.info.num_evaluations) == 0
    assert not bool(state.info.conditions_met)
    assert not bool(state.info.descent_direction)
    assert float(state.learning_rate) == 0.0


@pytest.mark.parametrize("name", ["backtracking", "zoom"])
def test_adam_directions_never_increase_the_loss(name):
    """Adam's momentum overshoots; the line search must not follow it uphill."""
    tx = jaxfit.chain(optax.adam(0.5, b1=0.95), LINESEARCHES[name]())

    def fn(w):
        return jnp.sum(jnp.array([1.0, 50.0]) * w**2)

    step = make_step(tx, fn)
    w = jnp.array([3.0, -2.0])
    state = tx.init(w)
    values, descent = [float(fn(w))], []
    for _ in range(30):
        w, state = step(w, state)
        values.append(float(fn(w)))
        descent.append(bool(state[-1].info.descent_direction))
    if name == "backtracking":
        assert not all(descent)  # the safeguard was needed
    assert all(b <= a for a, b in itertools.pairwise(values))
    assert values[-1] < 1e-2 * values[0]


def _barrier(w):
    """Finite only for w < 2 (log of a negative number is NaN); min at 5/3."""
    return jnp.sum(-3 * w - jnp.log(2.0 - w))


def _overflow(w):
    """Infinite outside |w| < 3."""
    return jnp.where(jnp.all(jnp.abs(w) < 3), jnp.sum((w - 2.5) ** 2), jnp.inf)


@pytest.mark.parametrize("fn", [_barrier, _overflow], ids=["nan", "inf"])
@pytest.mark.parametrize("name", list(LINESEARCHES))
def test_nonfinite_trials_shrink_the_step(name, fn):
    w = jnp.zeros(3)
    grad = jax.grad(fn)(w)
    direction = -100.0 * grad / jnp.linalg.norm(grad)  # overshoots the domain
    tx = LINESEARCHES[name](max_learning_rate=1.0) if "zoom" not in name else zoom()
    updates, state = search_once(tx, fn, w, direction)
    assert bool(jnp.all(jnp.isfinite(updates)))
    assert bool(state.info.nonfinite)
    assert bool(state.info.conditions_met)
    assert float(fn(w + updates)) < float(fn(w))
    assert jnp.isfinite(state.value)


@pytest.mark.parametrize("name", list(LINESEARCHES))
def test_nonfinite_value_or_direction_gives_a_zero_update(name):
    w = jnp.ones(2)
    grad = jnp.array([1.0, -1.0])
    tx = LINESEARCHES[name]()
    fn = lambda p: jnp.sum(p**2)
    updates, state = tx.update(
        -grad, tx.init(w), w, value=jnp.nan, grad=grad, value_fn=fn
    )
    chex.assert_trees_all_equal(updates, jnp.zeros(2))
    assert not bool(state.info.conditions_met)
    nan_grad = jnp.array([jnp.nan, 1.0])
    updates, state = tx.update(
        -nan_grad, tx.init(w), w, value=2.0, grad=nan_grad, value_fn=fn
    )
    chex.assert_trees_all_equal(updates, jnp.zeros(2))
    # A NaN direction with a finite gradient: the safeguard takes -grad.
    updates, state = tx.update(
        jnp.array([jnp.nan, 0.0]), tx.init(w), w, value=2.0, grad=2 * w, value_fn=fn
    )
    assert not bool(state.info.descent_direction)
    assert float(fn(w + updates)) < 2.0


def test_exhausted_backtracking_takes_the_last_decrease_or_no_step():
    fn = lambda w: jnp.sum(w**2)
    w = jnp.array([1.0])
    grad = 2 * w
    value = fn(w)
    # One trial at t=1.9 along -grad lands at -2.8: an increase -> no step.
    # (The first trial is min(increase_factor * 1, max_learning_rate), as
    # Optax's; increase_factor=inf starts at max_learning_rate.)
    tx = jaxfit.scale_by_backtracking_linesearch(
        1, increase_factor=float("inf"), max_learning_rate=1.9
    )
    state = tx.init(w)
    updates, state = tx.update(-grad, state, w, value=value, grad=grad, value_fn=fn)
    chex.assert_trees_all_equal(updates, jnp.zeros(1))
    assert not bool(state.info.conditions_met)
    assert float(state.learning_rate) == 0.0
    # The next search goes on below the failed trial (Optax's stays at 0).
    updates, state = tx.update(
        -0.1 * grad, state, w, value=value, grad=grad, value_fn=fn
    )
    assert bool(state.info.conditions_met)
    np.testing.assert_allclose(state.learning_rate, 1.9 * 0.8, rtol=1e-6)
    # Trials in (0.1, 1) decrease f but miss Armijo with slope_rtol=0.9: the
    # last one is taken, and its gradient stored for the next step.
    tx = jaxfit.scale_by_backtracking_linesearch(
        3, max_learning_rate=0.9, decrease_factor=0.95, slope_rtol=0.9, store_grad=True
    )
    updates, state = tx.update(
        -grad, tx.init(w), w, value=value, grad=grad, value_fn=fn
    )
    assert not bool(state.info.conditions_met)
    assert 0 < float(fn(w + updates)) < float(value)
    np.testing.assert_allclose(state.learning_rate, 0.9 * 0.95**2, rtol=1e-6)
    np.testing.assert_allclose(state.value, fn(w + updates), rtol=1e-6)
    np.testing.assert_allclose(state.grad, 2 * (w + updates), rtol=1e-6)
    assert int(state.info.num_evaluations) == 3


def test_backtracking_whose_budget_stops_above_the_needed_step_still_moves():
    # f = 50 w^2 needs t < 0.02 along -grad; 3 trials from 10 reach only 5.1:
    # every search fails, and each goes on below the last one's shortest
    # trial until a step fits (restarting from 10 would stall for ever).
    fn = lambda w: 50 * jnp.sum(w**2)
    tx = jaxfit.scale_by_backtracking_linesearch(3, max_learning_rate=10.0)
    w = jnp.array([1.0])
    state = tx.init(w)
    step = jax.jit(
        lambda w, state: tx.update(
            -jax.grad(fn)(w), state, w, value=fn(w), grad=jax.grad(fn)(w), value_fn=fn
        )
    )
    for _ in range(30):
        updates, state = step(w, state)
        w = w + updates
    assert bool(state.info.conditions_met)
    assert float(fn(w)) < 1e-3 * 50.0  # from f = 50; restarting from 10: stuck


def test_zoom_stops_at_max_learning_rate_with_decrease():
    fn = lambda w: -jnp.sum(w) + 1e-3 * jnp.sum(w**2)
    w = jnp.zeros(2)
    tx = zoom(max_learning_rate=4.0)
    updates, state = search_once(tx, fn, w, -jax.grad(fn)(w))
    assert float(state.learning_rate) == 4.0
    assert not bool(state.info.conditions_met)  # curvature not reachable
    assert float(fn(w + updates)) < float(fn(w))


# ---------------------------------------------------------------------------
# value_and_grad_from_state
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["backtracking_store_grad", "zoom"])
def test_value_and_grad_from_state_costs_no_extra_evaluation(name):
    fn = counted(rosenbrock)
    tx = jaxfit.chain(optax.sgd(1.0), LINESEARCHES[name]())
    step = make_step(tx, fn, from_state=True)
    w = jnp.array([-1.2, 1.0])
    state = tx.init(w)
    num_steps = 20
    for _ in range(num_steps):
        w, state = step(w, state)
    jax.effects_barrier()
    searched = int(state[1].info.total_evaluations)
    assert fn.calls[0] == searched + 1  # only the first step evaluates itself
    # The stored value and gradient are those at the new params.
    value, grad = jax.value_and_grad(rosenbrock)(w)
    np.testing.assert_allclose(state[1].value, value, rtol=1e-5)
    chex.assert_trees_all_close(state[1].grad, grad, rtol=1e-4, atol=1e-5)


def test_value_and_grad_from_state_errors_and_optax_states():
    fn = rosenbrock
    w = jnp.array([-1.2, 1.0])
    no_grad = jaxfit.chain(optax.sgd(1.0), backtracking())
    with pytest.raises(ValueError, match="store_grad"):
        jaxfit.value_and_grad_from_state(fn)(w, state=no_grad.init(w))
    two = jaxfit.chain(zoom(), zoom())
    with pytest.raises(KeyError, match="more than one"):  # as optax.tree.get
        jaxfit.value_and_grad_from_state(fn)(w, state=two.init(w))
    # Falls back to Optax's field names: works with Optax's zoom too.
    tx = optax.chain(optax.sgd(1.0), optax.scale_by_zoom_linesearch(10))
    value, grad = jaxfit.value_and_grad_from_state(fn)(w, state=tx.init(w))
    np.testing.assert_allclose(value, fn(w), rtol=1e-6)
    # has_aux: the aux is returned as by jax.value_and_grad(has_aux=True).
    aux_fn = lambda p: (fn(p), p)
    (value, aux), grad = jaxfit.value_and_grad_from_state(aux_fn, has_aux=True)(
        w, state=zoom().init(w)
    )
    chex.assert_trees_all_close(grad, jax.grad(fn)(w))
    chex.assert_trees_all_close(aux, w)


# ---------------------------------------------------------------------------
# Interoperability with Optax chains
# ---------------------------------------------------------------------------


def test_jaxfit_line_search_in_an_optax_chain():
    tx = optax.chain(
        optax.clip_by_global_norm(100.0), optax.sgd(1.0), zoom(max_learning_rate=10.0)
    )
    params, _ = run_scan(tx, quadratic, jnp.ones(4), 40)
    assert float(jnp.linalg.norm(jax.grad(quadratic)(params))) < 1e-5


def test_optax_line_search_in_a_jaxfit_chain():
    tx = jaxfit.chain(
        optax.scale_by_lbfgs(),
        jaxfit.scale(-1.0),
        optax.scale_by_zoom_linesearch(20, initial_guess_strategy="one"),
    )
    params, _ = run_scan(tx, rosenbrock, jnp.array([-1.2, 1.0]), 60)
    chex.assert_trees_all_close(params, jnp.ones(2), atol=1e-3)


def test_optax_and_jaxfit_line_searches_in_one_chain_with_a_batch():
    """Both consume ``batch=``; the driver passes only consumable arguments."""

    def loss(params, batch):
        return jnp.sum((params - batch) ** 2) + 0.1 * jnp.sum(params**4)

    tx = jaxfit.chain(
        optax.sgd(1.0),
        optax.scale_by_backtracking_linesearch(20),
        jaxfit.scale_by_backtracking_linesearch(20, max_learning_rate=2.0),
    )
    batches = jnp.stack([jnp.ones(3), 2 * jnp.ones(3), jnp.full(3, 0.5)] * 5)

    @jax.jit
    def run(params):
        def body(carry, batch):
            params, state = carry
            value, grad = jax.value_and_grad(loss)(params, batch)
            updates, state = tx.update(
                grad, state, params, value=value, grad=grad, value_fn=loss, batch=batch
            )
            new_params = optax.apply_updates(params, updates)
            return (new_params, state), loss(new_params, batch) <= value

        return jax.lax.scan(body, (params, tx.init(params)), batches)

    (params, _state), decreased = run(jnp.zeros(3))
    assert bool(jnp.all(decreased))
    assert bool(jnp.all(jnp.isfinite(params)))


# ---------------------------------------------------------------------------
# Convergence: Rosenbrock and More-Garbow-Hillstrom problems
# ---------------------------------------------------------------------------


def test_lbfgs_converges_on_rosenbrock_100d():
    w0 = jnp.tile(jnp.array([-1.2, 1.0]), 50)
    # The chained Rosenbrock from this start takes ~530 L-BFGS steps (as
    # optax.lbfgs); after that f ~ 1e-12 and float32 cannot show a decrease:
    # the searches fail and take no step rather than a harmful one.
    params, _state = run_scan(jaxfit.lbfgs(), rosenbrock, w0, 560)
    chex.assert_trees_all_close(params, jnp.ones(100), atol=1e-3)
    assert float(rosenbrock(params)) < 1e-8


def _helical_valley(x):
    theta = jnp.arctan2(x[1], x[0]) / (2 * jnp.pi)
    r = jnp.sqrt(x[0] ** 2 + x[1] ** 2)
    return (10 * (x[2] - 10 * theta)) ** 2 + (10 * (r - 1)) ** 2 + x[2] ** 2


def _beale(x):
    y = jnp.array([1.5, 2.25, 2.625])
    i = jnp.arange(1, 4)
    return jnp.sum((y - x[0] * (1 - x[1] ** i)) ** 2)


def _powell_singular(x):
    return (
        (x[0] + 10 * x[1]) ** 2
        + 5 * (x[2] - x[3]) ** 2
        + (x[1] - 2 * x[2]) ** 4
        + 10 * (x[0] - x[3]) ** 4
    )


def _wood(x):
    return (
        100 * (x[1] - x[0] ** 2) ** 2
        + (1 - x[0]) ** 2
        + 90 * (x[3] - x[2] ** 2) ** 2
        + (1 - x[2]) ** 2
        + 10.1 * ((x[1] - 1) ** 2 + (x[3] - 1) ** 2)
        + 19.8 * (x[1] - 1) * (x[3] - 1)
    )


def _box_3d(x):
    t = 0.1 * jnp.arange(1, 11)
    r = (
        jnp.exp(-t * x[0])
        - jnp.exp(-t * x[1])
        - x[2] * (jnp.exp(-t) - jnp.exp(-10 * t))
    )
    return jnp.sum(r**2)


# (objective, MGH starting point, tolerance on f - f*), f* = 0 for all five.
MGH = {
    "helical_valley": (_helical_valley, [-1.0, 0.0, 0.0]),
    "beale": (_beale, [1.0, 1.0]),
    "powell_singular": (_powell_singular, [3.0, -1.0, 0.0, 1.0]),
    "wood": (_wood, [-3.0, -1.0, -3.0, -1.0]),
    "box_3d": (_box_3d, [0.0, 10.0, 20.0]),
}


@pytest.mark.parametrize("problem", list(MGH))
def test_lbfgs_converges_on_more_garbow_hillstrom_problems(problem):
    fn, x0 = MGH[problem]
    with jax.enable_x64(True):
        params, _state = run_scan(jaxfit.lbfgs(), fn, jnp.asarray(x0), 200)
        assert float(fn(params)) < 1e-10
        assert float(jnp.linalg.norm(jax.grad(fn)(params))) < 1e-4
        assert jnp.all(jnp.isfinite(params))


def test_zoom_gradient_descent_converges_on_a_quadratic():
    tx = jaxfit.chain(optax.sgd(1.0), zoom())
    params, _state = run_scan(tx, quadratic, jnp.ones(4), 60)
    grad = jax.grad(quadratic)(params)
    assert float(jnp.linalg.norm(grad)) < 1e-4


def test_complex_params():
    # Optax's convention: the gradient passed to update is conj(jax.grad(f)).
    # (This test passed jax.grad itself before jaxfit followed Optax here.)
    center = jnp.array([1.0 + 2.0j, -0.5j])

    def fn(z):
        return jnp.sum(jnp.abs(z - center) ** 2)

    value_and_grad = jaxfit.value_and_grad_from_state(fn)
    for name in LINESEARCHES:
        tx = jaxfit.chain(optax.sgd(1.0), LINESEARCHES[name]())
        step = jax.jit(
            lambda z, state, tx=tx: _conj_step(tx, fn, value_and_grad, z, state)
        )
        z = jnp.zeros(2, jnp.complex64)
        state = tx.init(z)
        for _ in range(30):
            z, state = step(z, state)
        chex.assert_trees_all_close(z, center, atol=1e-5)
        assert bool(state[1].info.descent_direction)


def _conj_step(tx, fn, value_and_grad, z, state):
    if jax.tree.leaves(state[1].grad):  # reuse the search's evaluation
        value, grad = value_and_grad(z, state=state)
    else:
        value, grad = jax.value_and_grad(fn)(z)
    grad = jnp.conj(grad)
    updates, state = tx.update(grad, state, z, value=value, grad=grad, value_fn=fn)
    return optax.apply_updates(z, updates), state
