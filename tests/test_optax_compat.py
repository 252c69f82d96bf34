"""Optax's factories, argument for argument: jaxfit against Optax 0.2.8.

Every jaxfit factory that shares a name with an Optax factory accepts Optax's
arguments in Optax's order with Optax's defaults and meaning, and follows
Optax's convention for complex params (the gradient passed to ``update`` is
``conj(jax.grad(f))``). The deliberate differences, listed in
docs/transformations.md ("Switching from Optax"), are pinned at the end.
"""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit
import jaxfit.transforms

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def avals(tree):
    """(shape, dtype, weak_type) of every leaf: arrays, floats or eval_shape's."""

    def aval(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return tuple(x.shape), jnp.dtype(x.dtype), x.weak_type
        x = jax.typeof(jnp.asarray(x))
        return tuple(x.shape), jnp.dtype(x.dtype), x.weak_type

    return jax.tree.map(aval, tree)


def run_steps(tx, fn, params, num_steps, *, conj=False, from_state=None):
    """``num_steps`` jitted steps of ``tx`` on ``fn``; returns (params, state).

    ``conj`` passes Optax's gradient for complex params, ``conj(jax.grad)``;
    ``from_state`` is a ``value_and_grad_from_state`` to reuse evaluations.
    """

    @jax.jit
    def step(params, state):
        if from_state is None:
            value, grad = jax.value_and_grad(fn)(params)
        else:
            value, grad = from_state(fn)(params, state=state)
        if conj:
            grad = optax.tree.conj(grad)
        updates, state = tx.update(
            grad, state, params, value=value, grad=grad, value_fn=fn
        )
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(num_steps):
        params, state = step(params, state)
    return params, state


def quadratic(w):
    scales = jnp.arange(1, w.size + 1, dtype=w.dtype)
    return 0.5 * jnp.sum(scales * w**2) + jnp.sum(w)


def search_once(tx, fn, params, direction, grad=None):
    value, jax_grad = jax.value_and_grad(fn)(params)
    grad = jax_grad if grad is None else grad
    return tx.update(
        direction, tx.init(params), params, value=value, grad=grad, value_fn=fn
    )


# ---------------------------------------------------------------------------
# 9. Signatures: Optax's parameters first, in Optax's order, Optax's defaults
# ---------------------------------------------------------------------------

SHARED_FACTORIES = sorted(
    name
    for name in jaxfit.transforms.__all__
    if inspect.isfunction(getattr(optax, name, None))
)


def test_every_shared_name_is_checked():
    assert {"adam", "adamw", "sgd", "chain", "lbfgs", "scale_by_lbfgs"} <= set(
        SHARED_FACTORIES
    )
    assert "value_and_grad_from_state" in SHARED_FACTORIES


def _same_default(name, ours, theirs):
    if isinstance(theirs, optax.GradientTransformation):
        # lbfgs's default line search: a zoom search object in both.
        return isinstance(ours, optax.GradientTransformationExtraArgs)
    return ours == theirs or (ours is theirs)


@pytest.mark.parametrize("name", SHARED_FACTORIES)
def test_signature_starts_with_optax_parameters(name):
    theirs = list(inspect.signature(getattr(optax, name)).parameters.values())
    ours = list(inspect.signature(getattr(jaxfit.transforms, name)).parameters.values())
    assert len(ours) >= len(theirs)
    for their, our in zip(theirs, ours, strict=False):
        assert (our.name, our.kind) == (their.name, their.kind), name
        assert _same_default(name, our.default, their.default), (
            f"{name}({our.name}=...): default {our.default!r} != {their.default!r}"
        )
    # jaxfit's own arguments come after Optax's and are keyword-only.
    for extra in ours[len(theirs) :]:
        assert extra.kind == inspect.Parameter.KEYWORD_ONLY, (name, extra.name)


@pytest.mark.parametrize(
    "name", ["ScaleByAdamState", "ScaleByScheduleState", "TraceState"]
)
def test_state_classes_are_optax_own(name):
    assert getattr(jaxfit, name) is getattr(optax, name)


STATE_CASES = {
    "adam": lambda m: m.adam(1e-3),
    "adamw": lambda m: m.adamw(1e-3),
    "sgd": lambda m: m.sgd(0.1),
    "sgd_momentum": lambda m: m.sgd(0.1, 0.9),
    "scale_by_learning_rate_none": lambda m: m.scale_by_learning_rate(None),
    "scale_by_learning_rate_schedule": lambda m: m.scale_by_learning_rate(
        lambda count: 0.1
    ),
    "trace": lambda m: m.trace(0.9),
    "lbfgs_without_line_search": lambda m: m.lbfgs(linesearch=None),
}


@pytest.mark.parametrize("name", list(STATE_CASES))
def test_state_is_the_same_pytree_as_optax(name):
    """Same structure and avals: Optax states and checkpoints carry over."""
    params = {"w": jnp.ones(3), "b": jnp.zeros(())}
    ours = STATE_CASES[name](jaxfit)
    theirs = STATE_CASES[name](optax)
    assert jax.tree.structure(ours.init(params)) == jax.tree.structure(
        theirs.init(params)
    )
    assert avals(ours.init(params)) == avals(theirs.init(params))
    assert isinstance(ours, type(theirs))


# ---------------------------------------------------------------------------
# 1. lbfgs(linesearch=None) is "no line search"; the default is zoom
# ---------------------------------------------------------------------------


def test_lbfgs_linesearch_none_means_no_line_search_as_optax():
    w0 = jnp.array([1.0, -2.0, 0.5, 3.0])
    results = []
    for module in (jaxfit, optax):
        tx = module.lbfgs(learning_rate=0.5, linesearch=None)
        # No line search: update needs no value or value_fn.
        state = tx.init(w0)
        w = w0
        update = jax.jit(tx.update)
        for _ in range(8):
            updates, state = update(jax.grad(quadratic)(w), state, w)
            w = optax.apply_updates(w, updates)
        results.append(w)
    chex.assert_trees_all_close(*results, rtol=1e-6, atol=1e-7)


def test_lbfgs_default_line_search_is_jaxfit_zoom_with_optax_settings():
    default = inspect.signature(jaxfit.lbfgs).parameters["linesearch"].default
    assert isinstance(default, optax.GradientTransformationExtraArgs)
    state = jaxfit.lbfgs().init(jnp.ones(2))
    assert isinstance(state[-1], jaxfit.ScaleByZoomLinesearchState)
    # Same steps as passing the search explicitly.
    explicit = jaxfit.lbfgs(
        linesearch=jaxfit.scale_by_zoom_linesearch(20, initial_guess_strategy="one")
    )
    w0 = jnp.array([-1.2, 1.0, 0.3])
    chex.assert_trees_all_equal(
        run_steps(jaxfit.lbfgs(), quadratic, w0, 5)[0],
        run_steps(explicit, quadratic, w0, 5)[0],
    )


# ---------------------------------------------------------------------------
# 2. Complex params: Optax's convention, grad = conj(jax.grad(f))
# ---------------------------------------------------------------------------


def _complex_problem():
    rng = np.random.default_rng(0)
    mat = jnp.asarray(rng.normal(size=(5, 5)) + 1j * rng.normal(size=(5, 5)))
    return lambda z: jnp.sum(jnp.abs(mat @ z) ** 1.5)


def test_lbfgs_on_complex_params_follows_optax():
    with jax.enable_x64(True):
        h = _complex_problem()
        z0 = jnp.ones(5, jnp.complex128)
        ours, state = run_steps(
            jaxfit.lbfgs(),
            h,
            z0,
            30,
            conj=True,
            from_state=jaxfit.value_and_grad_from_state,
        )
        theirs, _ = run_steps(
            optax.lbfgs(),
            h,
            z0,
            30,
            conj=True,
            from_state=optax.value_and_grad_from_state,
        )
        assert float(h(ours)) < 1e-4 * float(h(z0))
        np.testing.assert_allclose(h(ours), h(theirs), rtol=1e-6)
        assert bool(state[-1].info.descent_direction)


SEARCHES = {
    "zoom": lambda m: m.scale_by_zoom_linesearch(20),
    "backtracking": lambda m: m.scale_by_backtracking_linesearch(20, store_grad=True),
}


@pytest.mark.parametrize("name", list(SEARCHES))
def test_line_search_slope_on_complex_params_is_optax_zoom_slope(name):
    """A descent direction in Optax's convention is searched, not rejected."""
    factory = SEARCHES[name]
    h = _complex_problem()
    z = jnp.array([1.0 + 0.5j, -1.0, 0.3j, 2.0, 1.0 - 1.0j], jnp.complex64)
    grad = jnp.conj(jax.grad(h)(z))  # Optax's convention
    updates, state = search_once(factory(jaxfit), h, z, -grad, grad=grad)
    assert bool(state.info.descent_direction)
    assert bool(state.info.conditions_met)
    assert float(h(z + updates)) < float(h(z))
    if name == "zoom":
        _, theirs = search_once(factory(optax), h, z, -grad, grad=grad)
        np.testing.assert_allclose(state.learning_rate, theirs.learning_rate, 1e-5)
    # The stored gradient is jax.grad's, as jax.value_and_grad returns it.
    chex.assert_trees_all_close(
        state.grad, jax.grad(h)(z + updates), rtol=1e-4, atol=1e-5
    )


# ---------------------------------------------------------------------------
# 3. The line searches' own arguments
# ---------------------------------------------------------------------------


def test_zoom_tol_is_optax_tol():
    fn = lambda w: jnp.sum(w**2)
    w = jnp.ones(1)
    direction = -2 * jax.grad(fn)(w)  # t = 1 overshoots to -3
    for tol, step in ((0.0, 0.25), (20.0, 1.0)):  # tol=20 accepts the overshoot
        for module in (jaxfit, optax):
            # Positionally: (max_linesearch_steps, max_learning_rate, tol, ...).
            tx = module.scale_by_zoom_linesearch(10, None, tol)
            _, state = search_once(tx, fn, w, direction)
            assert float(state.learning_rate) == step, (module.__name__, tol)


@pytest.mark.parametrize(
    "kwargs",
    [{"curv_rtol": float("inf")}, {"slope_rtol": 0.0}, {"stepsize_precision": 0.1}],
    ids=["no_curvature", "plain_decrease", "coarse_precision"],
)
def test_zoom_accepts_optax_argument_values(kwargs):
    fn = lambda w: jnp.sum(jnp.exp(w) - 2 * w)
    w = jnp.array([0.3, -1.0, 2.0])
    direction = -jax.grad(fn)(w)
    _, ours = search_once(
        jaxfit.scale_by_zoom_linesearch(30, **kwargs), fn, w, direction
    )
    _, theirs = search_once(
        optax.scale_by_zoom_linesearch(30, **kwargs), fn, w, direction
    )
    assert bool(ours.info.conditions_met)
    np.testing.assert_allclose(ours.learning_rate, theirs.learning_rate, rtol=0.05)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"slope_rtol": 0.0},
        {"increase_factor": 0.5},
        {"increase_factor": 1.0},
        {"increase_factor": float("inf")},
    ],
    ids=["slope_rtol_0", "increase_0.5", "increase_1", "increase_inf"],
)
def test_backtracking_accepts_optax_argument_values(kwargs):
    def rosenbrock(w):
        return jnp.sum(100 * (w[1:] - w[:-1] ** 2) ** 2 + (1 - w[:-1]) ** 2)

    w0 = jnp.array([-1.2, 1.0, 0.5])
    results = [
        run_steps(
            optax.chain(
                optax.sgd(1.0), module.scale_by_backtracking_linesearch(40, **kwargs)
            ),
            rosenbrock,
            w0,
            10,
        )[0]
        for module in (jaxfit, optax)
    ]
    chex.assert_trees_all_close(*results, rtol=1e-5)


@pytest.mark.parametrize("name", ["backtracking", "zoom"])
def test_verbose_prints_when_the_search_fails(name, capfd):
    fn = lambda w: jnp.sum(w**2)
    w = jnp.ones(2)
    direction = -100.0 * jax.grad(fn)(w)  # every trial of one overshoots

    def make(verbose):
        if name == "zoom":  # positionally, as Optax: verbose is the tenth
            return jaxfit.scale_by_zoom_linesearch(
                1, None, 0.0, 2.0, 1e-4, 0.9, 1e-6, 1e-5, "keep", verbose
            )
        return jaxfit.scale_by_backtracking_linesearch(
            1, 1e-4, 0.8, 1.5, 1.0, 0.0, 0.0, False, verbose
        )

    for verbose in (False, True):
        search_once(make(verbose), fn, w, direction)
        jax.effects_barrier()
        printed = capfd.readouterr().out
        assert ("line search failed" in printed) == verbose


# ---------------------------------------------------------------------------
# 4. bfloat16 and float16 hyperparameters and params
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_hyperparameters_are_numbers(dtype):
    lr = jnp.array(1e-2, dtype)
    params = jnp.linspace(-1.0, 1.0, 4).astype(dtype)
    for make in (
        lambda m: m.adam(lr, b1=jnp.array(0.9, dtype)),
        lambda m: m.sgd(lr, jnp.array(0.5, dtype)),
        lambda m: m.chain(m.clip_by_global_norm(jnp.array(1.0, dtype)), m.scale(lr)),
    ):
        ours, theirs = make(jaxfit), make(optax)
        state_ours, state_theirs = ours.init(params), theirs.init(params)
        for _ in range(3):
            up_ours, state_ours = ours.update(params, state_ours, params)
            up_theirs, state_theirs = theirs.update(params, state_theirs, params)
            chex.assert_trees_all_close(
                up_ours.astype(jnp.float32), up_theirs.astype(jnp.float32), rtol=2e-2
            )
        assert avals(state_ours) == avals(ours.init(params))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("store_grad", [False, True])
def test_backtracking_state_is_stable_in_low_precision(dtype, store_grad):
    h = lambda p: jnp.sum(jnp.square(p).astype(jnp.float32))
    params = jnp.linspace(-1.0, 1.0, 4).astype(dtype)
    value, grad = jax.value_and_grad(h)(params)
    hyper = dict(
        slope_rtol=jnp.array(1e-4, dtype),
        decrease_factor=jnp.array(0.8, dtype),
        max_learning_rate=jnp.array(1.0, dtype),
    )
    for tx in (
        jaxfit.scale_by_backtracking_linesearch(20, store_grad=store_grad, **hyper),
        # inject_hyperparams casts float hyperparameters to the params' dtype.
        optax.inject_hyperparams(
            jaxfit.scale_by_backtracking_linesearch, static_args=("store_grad",)
        )(20, store_grad=store_grad),
    ):
        state = tx.init(params)
        _, new_state = jax.eval_shape(
            lambda s, tx=tx: tx.update(
                -grad, s, params, value=value.astype(dtype), grad=grad, value_fn=h
            ),
            state,
        )
        assert avals(new_state) == avals(state)


# ---------------------------------------------------------------------------
# 5. A state holding Python floats (as optax.tree.set leaves it)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["zoom", "backtracking"])
def test_state_with_python_floats_works(name):
    fn = quadratic
    w = jnp.array([1.0, -2.0, 0.5])
    make = {
        "zoom": lambda: jaxfit.scale_by_zoom_linesearch(20),
        "backtracking": lambda: jaxfit.scale_by_backtracking_linesearch(20),
    }[name]
    tx = optax.chain(optax.sgd(1.0), make())
    value, grad = jax.value_and_grad(fn)(w)
    state = tx.init(w)
    set_state = optax.tree.set(state, learning_rate=1.0)
    assert isinstance(set_state[1].learning_rate, float)
    expected, expected_state = tx.update(
        grad, state, w, value=value, grad=grad, value_fn=fn
    )
    updates, new_state = tx.update(
        grad, set_state, w, value=value, grad=grad, value_fn=fn
    )
    chex.assert_trees_all_close(updates, expected)
    assert avals(new_state) == avals(expected_state) == avals(state)


# ---------------------------------------------------------------------------
# 6. value_and_grad_from_state: Optax's API, has_aux, Optax's exceptions
# ---------------------------------------------------------------------------


def test_value_and_grad_from_state_keeps_the_aux():
    def fn_aux(w):
        return quadratic(w), {"w2": w**2}

    tx = jaxfit.lbfgs(linesearch=jaxfit.scale_by_zoom_linesearch(20, has_aux=True))
    value_and_grad = jaxfit.value_and_grad_from_state(fn_aux, has_aux=True)

    @jax.jit
    def step(w, state):
        (value, aux), grad = value_and_grad(w, state=state)
        updates, state = tx.update(
            grad, state, w, value=value, grad=grad, value_fn=fn_aux
        )
        return optax.apply_updates(w, updates), state, (value, aux), grad

    w = jnp.array([1.0, -2.0, 0.5])
    state = tx.init(w)
    for _ in range(3):  # computed at the first step, reused after
        expected = jax.value_and_grad(fn_aux, has_aux=True)(w)
        w, state, (value, aux), grad = step(w, state)
        chex.assert_trees_all_close(((value, aux), grad), expected, rtol=1e-5)


def test_value_and_grad_from_state_raises_optax_exception_types():
    fn = quadratic
    w = jnp.ones(3)
    cases = [
        # No stored gradient: ValueError in both.
        (
            lambda m: m.chain(m.sgd(1.0), m.scale_by_backtracking_linesearch(10)),
            ValueError,
        ),
        # Two line-search states: KeyError in both (optax.tree.get's).
        (
            lambda m: m.chain(
                m.scale_by_zoom_linesearch(10), m.scale_by_zoom_linesearch(10)
            ),
            KeyError,
        ),
    ]
    for make, error in cases:
        for module in (jaxfit, optax):
            with pytest.raises(error):
                module.value_and_grad_from_state(fn)(w, state=make(module).init(w))
    # Not callable: TypeError (Optax's at the call, jaxfit's at once).
    with pytest.raises(TypeError):
        optax.value_and_grad_from_state(3)(w, state=optax.lbfgs().init(w))
    with pytest.raises(TypeError):
        jaxfit.value_and_grad_from_state(3)


# ---------------------------------------------------------------------------
# 7. optax.inject_hyperparams
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory,args",
    [
        (jaxfit.scale_by_zoom_linesearch, {"max_linesearch_steps": 20}),
        (jaxfit.scale_by_backtracking_linesearch, {"max_backtracking_steps": 20}),
    ],
    ids=["zoom", "backtracking"],
)
def test_inject_hyperparams_on_line_searches(factory, args):
    w0 = jnp.array([1.0, -2.0, 0.5])
    injected = optax.inject_hyperparams(factory)(**args)
    ours, state = run_steps(optax.chain(optax.sgd(1.0), injected), quadratic, w0, 5)
    assert state[1].hyperparams[next(iter(args))].dtype == jnp.int32  # an array
    plain, _ = run_steps(optax.chain(optax.sgd(1.0), factory(**args)), quadratic, w0, 5)
    chex.assert_trees_all_close(ours, plain, rtol=1e-6)


def test_inject_hyperparams_on_lbfgs_as_on_optax():
    w0 = jnp.array([1.0, -2.0, 0.5])
    expected, _ = run_steps(jaxfit.lbfgs(), quadratic, w0, 2)
    # Outside jit memory_size arrives as a concrete array (works in Optax too).
    tx = optax.inject_hyperparams(jaxfit.lbfgs)()
    state = tx.init(w0)
    w = w0
    for _ in range(2):
        value, grad = jax.value_and_grad(quadratic)(w)
        updates, state = tx.update(
            grad, state, w, value=value, grad=grad, value_fn=quadratic
        )
        w = optax.apply_updates(w, updates)
    chex.assert_trees_all_close(w, expected, rtol=1e-6)
    # Under jit a shape cannot be traced: static_args, as for Optax's lbfgs.
    static = optax.inject_hyperparams(jaxfit.lbfgs, static_args=("memory_size",))
    chex.assert_trees_all_close(
        run_steps(static(), quadratic, w0, 2)[0], expected, rtol=1e-6
    )
    with pytest.raises(TypeError, match="static_args"):
        run_steps(optax.inject_hyperparams(jaxfit.lbfgs)(), quadratic, w0, 1)


# ---------------------------------------------------------------------------
# 8. L-BFGS memory holds positive-curvature pairs only
# ---------------------------------------------------------------------------


def test_scale_by_lbfgs_equals_optax_when_no_pair_is_skipped():
    """On a convex quadratic every pair has positive curvature."""
    ours_tx = jaxfit.transforms.scale_by_lbfgs(memory_size=3)
    theirs_tx = optax.scale_by_lbfgs(memory_size=3)
    w = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(3.0)}

    def grad_fn(p):
        return jax.grad(lambda p: quadratic(p["a"]) + 2.0 * p["b"] ** 2)(p)

    ours, theirs = ours_tx.init(w), theirs_tx.init(w)
    for _ in range(6):  # wraps around the memory of 3
        g = grad_fn(w)
        up_ours, ours = jax.jit(ours_tx.update)(g, ours, w)
        up_theirs, theirs = jax.jit(theirs_tx.update)(g, theirs, w)
        chex.assert_trees_all_close(up_ours, up_theirs, rtol=1e-6)
        w = jax.tree.map(lambda p, u: p - 0.1 * u, w, up_theirs)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-6)


def test_lbfgs_memory_never_holds_a_negative_curvature_pair():
    # Without a curvature-checking line search, steps on a non-convex
    # function produce pairs with s.y < 0; Optax stores them.
    def fn(w):
        return jnp.sum(jnp.cos(3 * w)) + 0.1 * jnp.sum(w**2)

    w0 = jnp.array([0.1, 0.7, -0.4, 1.3])

    def weights(module):
        tx = module.lbfgs(learning_rate=0.3, linesearch=optax.identity())
        state = tx.init(w0)
        w, seen = w0, []
        update = jax.jit(tx.update)
        for _ in range(15):
            updates, state = update(jax.grad(fn)(w), state, w)
            w = optax.apply_updates(w, updates)
            seen.append(state[0].weights_memory)
        return jnp.stack(seen)

    assert bool(jnp.any(weights(optax) < 0))  # the case arises
    assert bool(jnp.all(weights(jaxfit) >= 0))


def test_skipped_pair_keeps_the_memory():
    tx = jaxfit.transforms.scale_by_lbfgs(memory_size=2)
    w = jnp.array([1.0, 2.0])
    state = tx.init(w)
    _, state = tx.update(jnp.array([1.0, 1.0]), state, w)
    _, state = tx.update(jnp.array([2.0, 1.5]), state, w + 1.0)  # s.y > 0: kept
    kept = state
    _, state = tx.update(jnp.array([0.0, 0.0]), state, w + 2.0)  # s.y < 0
    chex.assert_trees_all_equal(
        (state.count, state.diff_params_memory, state.weights_memory),
        (kept.count, kept.diff_params_memory, kept.weights_memory),
    )
    chex.assert_trees_all_equal(state.params, w + 2.0)  # the next pair starts here


# ---------------------------------------------------------------------------
# 10. The deliberate differences (docs/transformations.md, "Switching from
# Optax"), each pinned with Optax's behaviour beside it
# ---------------------------------------------------------------------------


def test_difference_clipping_keeps_non_finite_values_visible():
    g = jnp.array([jnp.inf, 3.0, jnp.nan])
    ours, _ = jaxfit.clip(1.0).update(g, None)
    theirs, _ = optax.clip(1.0).update(g, None)
    assert float(ours[0]) == jnp.inf and float(theirs[0]) == 1.0  # Optax hides it
    g = {"a": jnp.array([jnp.inf, 3.0]), "b": jnp.array([4.0])}
    ours, _ = jaxfit.clip_by_global_norm(1.0).update(g, None)
    theirs, _ = optax.clip_by_global_norm(1.0).update(g, None)
    chex.assert_trees_all_equal(ours, g)
    assert float(theirs["b"][0]) == 0.0  # Optax zeroes the finite leaves


def test_difference_non_descent_direction_is_not_followed_uphill():
    fn = quadratic
    w = jnp.array([1.0, -2.0, 0.5])
    ascent = 0.1 * jax.grad(fn)(w)
    for factory in (
        lambda m: m.scale_by_zoom_linesearch(20),
        lambda m: m.scale_by_backtracking_linesearch(20),
    ):
        ours, state = search_once(factory(jaxfit), fn, w, ascent)
        theirs, _ = search_once(factory(optax), fn, w, ascent)
        assert not bool(state.info.descent_direction)
        assert float(fn(w + ours)) < float(fn(w))
        assert float(fn(w + theirs)) >= float(fn(w))  # Optax goes uphill or stays


def test_difference_unused_extra_arguments_are_ignored():
    fn = quadratic
    w = jnp.array([1.0, -2.0, 0.5])
    value, grad = jax.value_and_grad(fn)(w)
    kwargs = dict(value=value, grad=grad, value_fn=fn, residual_weights=jnp.ones(3))
    for factory in (
        lambda m: m.scale_by_zoom_linesearch(20),
        lambda m: m.scale_by_backtracking_linesearch(20),
    ):
        tx = factory(jaxfit)
        updates, _ = tx.update(-grad, tx.init(w), w, **kwargs)
        assert float(fn(w + updates)) < float(value)
        tx = factory(optax)
        with pytest.raises(TypeError, match="not consumed"):
            tx.update(-grad, tx.init(w), w, **kwargs)


def test_difference_line_search_state_compiles_once():
    """Optax's line-search state changes avals at the first update."""
    w = jnp.ones(3)
    value, grad = jax.value_and_grad(quadratic)(w)
    for factory in (
        lambda m: m.scale_by_zoom_linesearch(20),
        lambda m: m.scale_by_backtracking_linesearch(20),
    ):
        changed = []
        for module in (jaxfit, optax):
            tx = factory(module)
            state = tx.init(w)
            _, new_state = jax.jit(
                lambda s, tx=tx: tx.update(
                    -grad, s, w, value=value, grad=grad, value_fn=quadratic
                )
            )(state)
            changed.append(avals(new_state) != avals(state))
        assert changed == [False, True]


def test_difference_backtracking_complex_slope_is_the_directional_derivative():
    """Optax's backtracking reads Re sum(u * grad), its zoom Re <grad, u>:
    for complex params only the latter is the derivative along u."""
    h = _complex_problem()
    z = jnp.array([1.0 + 0.5j, -1.0, 0.3j, 2.0, 1.0 - 1.0j], jnp.complex64)
    grad = jnp.conj(jax.grad(h)(z))  # Optax's convention
    u = -grad
    exact = jax.jvp(lambda t: h(z + t * u), (0.0,), (1.0,))[1]
    zoom_slope = optax.tree.real(optax.tree.vdot(u, grad))
    backtracking_slope = optax.tree.real(optax.tree.vdot(u, optax.tree.conj(grad)))
    np.testing.assert_allclose(zoom_slope, exact, rtol=1e-4)
    assert abs(float(backtracking_slope - exact)) > 0.1 * abs(float(exact))
    tx = jaxfit.scale_by_backtracking_linesearch(20, slope_rtol=0.5)
    _, state = search_once(tx, h, z, u, grad=grad)
    t = state.learning_rate
    assert float(h(z + t * u)) <= float(h(z)) + 0.5 * float(t) * float(exact)


def test_difference_backtracking_budget_and_relative_tolerance():
    fn = lambda w: jnp.sum(w**2) - 1.0  # negative values near w = 0
    w = jnp.array([0.1])
    grad = jax.grad(fn)(w)
    # The budget: at most max_backtracking_steps trials (Optax makes one more).
    far = -100.0 * grad
    _, ours = search_once(jaxfit.scale_by_backtracking_linesearch(3), fn, w, far)
    _, theirs = search_once(optax.scale_by_backtracking_linesearch(3), fn, w, far)
    assert int(ours.info.num_linesearch_steps) == 3
    assert int(theirs.info.num_linesearch_steps) == 4
    # rtol loosens by rtol * |f(w)|; Optax's (1 + rtol) * f(w) tightens the
    # condition when f(w) < 0. The step t = 1 lands at w = -0.105: an
    # increase of 1e-3, within 1e-2 * |f(w)|.
    overshoot = jnp.array([-0.205])
    _, ours = search_once(
        jaxfit.scale_by_backtracking_linesearch(20, rtol=1e-2), fn, w, overshoot
    )
    _, theirs = search_once(
        optax.scale_by_backtracking_linesearch(20, rtol=1e-2), fn, w, overshoot
    )
    assert float(ours.learning_rate) == 1.0
    assert float(theirs.learning_rate) < 1.0


def test_difference_arguments_are_checked_at_construction():
    optax.adam(-1e-3)  # Optax accepts a negative rate (gradient ascent)
    with pytest.raises(ValueError, match="learning_rate"):
        jaxfit.adam(-1e-3)
