"""Behaviour of the core transformations under jit, vmap and scan; errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit
from tests.conftest import random_tree

TRANSFORMS = {
    "clip": lambda: jaxfit.clip(0.5),
    "clip_by_global_norm": lambda: jaxfit.clip_by_global_norm(1.0),
    "scale": lambda: jaxfit.scale(0.1),
    "scale_by_schedule": lambda: jaxfit.scale_by_schedule(lambda c: 1 / (1 + c)),
    "scale_by_adam_bf16_mu": lambda: jaxfit.scale_by_adam(mu_dtype=jnp.bfloat16),
    "adam_schedule": lambda: jaxfit.adam(optax.linear_schedule(1e-2, 1e-3, 10)),
    "adamw": lambda: jaxfit.adamw(1e-2, weight_decay=0.1),
    "sgd_momentum": lambda: jaxfit.sgd(1e-2, momentum=0.9, nesterov=True),
    "clip_adam": lambda: jaxfit.chain(
        jaxfit.clip_by_global_norm(1.0), jaxfit.adam(1e-3)
    ),
}


def _avals(tree):
    return jax.tree.map(lambda x: jax.typeof(x), tree)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_state_types_identical_after_init_and_update(name):
    tx = TRANSFORMS[name]()
    # Python floats are weakly typed: the classic source of a second compile.
    params = {"a": 1.0, "b": jnp.ones(3)}
    state = tx.init(params)
    _, new_state = jax.jit(tx.update)(params, state, params)
    assert _avals(new_state) == _avals(state)
    assert not any(
        getattr(jax.typeof(x), "weak_type", False) for x in jax.tree.leaves(state)
    )


def test_jitted_step_compiles_once(count_compilations):
    tx = TRANSFORMS["clip_adam"]()
    params = random_tree(0)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: optax.tree.norm(p, squared=True))(params)
        updates, state = tx.update(grads, state, params)
        return jaxfit.apply_updates(params, updates), state

    state = tx.init(params)
    params, state = step(params, state)  # compiles
    with count_compilations() as counter:
        for _ in range(3):
            params, state = step(params, state)
    assert counter.count == 0


def test_state_is_a_scan_carry_and_scan_equals_loop():
    tx = TRANSFORMS["clip_adam"]()
    params = random_tree(1)
    grads_seq = jax.tree.map(
        lambda p: jnp.stack([p * (k + 1) for k in range(5)]), params
    )

    def step(carry, grads):
        params, state = carry
        updates, state = tx.update(grads, state, params)
        return (jaxfit.apply_updates(params, updates), state), None

    (scanned, _), _ = jax.lax.scan(step, (params, tx.init(params)), grads_seq)
    carry = (params, tx.init(params))
    for k in range(5):
        carry, _ = step(carry, jax.tree.map(lambda g, k=k: g[k], grads_seq))
    chex.assert_trees_all_close(scanned, carry[0], rtol=1e-6, atol=1e-7)


def test_vmap_over_independent_problems_matches_one_by_one():
    tx = TRANSFORMS["clip_adam"]()
    targets = jnp.arange(12.0).reshape(4, 3)  # four problems, three params each

    def solve(target):
        def step(carry, _):
            params, state = carry
            grads = jax.grad(lambda p: jnp.sum((p - target) ** 2))(params)
            updates, state = tx.update(grads, state, params)
            return (jaxfit.apply_updates(params, updates), state), None

        params = jnp.zeros(3)
        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), length=50)
        return params

    batched = jax.jit(jax.vmap(solve))(targets)
    one_by_one = jnp.stack([solve(t) for t in targets])
    chex.assert_trees_all_close(batched, one_by_one, rtol=1e-6)
    # The clip is per problem: each moved 50 steps of at most 1e-3 * ~1.
    assert jnp.all(jnp.abs(batched) < 0.06)


def test_mixed_precision_moment_keeps_its_dtype():
    tx = jaxfit.scale_by_adam(mu_dtype=jnp.bfloat16)
    params = {"w": jnp.ones(3, jnp.float32)}
    state = tx.init(params)
    updates, state = tx.update(params, state)
    assert state.mu["w"].dtype == jnp.bfloat16
    assert state.nu["w"].dtype == jnp.float32
    assert updates["w"].dtype == jnp.float32


# Non-finite policy: propagate, never turn into finite numbers.


def test_clip_passes_non_finite_elements_through():
    tx = jaxfit.clip(1.0)
    g = jnp.array([jnp.nan, jnp.inf, -jnp.inf, 5.0])
    out, _ = tx.update(g, tx.init(g))
    assert jnp.isnan(out[0]) and out[1] == jnp.inf and out[2] == -jnp.inf
    assert out[3] == 1.0


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_clip_by_global_norm_leaves_non_finite_updates_unchanged(bad):
    tx = jaxfit.clip_by_global_norm(1.0)
    g = {"a": jnp.array([bad, 3.0]), "b": jnp.array([4.0])}
    out, _ = tx.update(g, tx.init(g))
    chex.assert_trees_all_equal(out, g)  # NaN/inf kept, others not zeroed


def test_adam_propagates_nan_gradients():
    tx = jaxfit.chain(jaxfit.clip_by_global_norm(1.0), jaxfit.adam(1e-3))
    params = jnp.ones(3)
    g = jnp.array([jnp.nan, 1.0, 1.0])
    updates, _ = tx.update(g, tx.init(params), params)
    assert not bool(jnp.all(jnp.isfinite(updates)))


# Bad arguments: ValueError at construction, naming the argument.


@pytest.mark.parametrize(
    "make,argument",
    [
        (lambda: jaxfit.adam(-1e-3), "learning_rate"),
        (lambda: jaxfit.adam(float("nan")), "learning_rate"),
        (lambda: jaxfit.adam("fast"), "learning_rate"),
        (lambda: jaxfit.adam(1e-3, b1=1.0), "b1"),
        (lambda: jaxfit.adam(1e-3, b1=-0.1), "b1"),
        (lambda: jaxfit.scale_by_adam(b2=1.5), "b2"),
        (lambda: jaxfit.scale_by_adam(eps=-1.0), "eps"),
        (lambda: jaxfit.scale_by_adam(mu_dtype=jnp.int32), "mu_dtype"),
        (lambda: jaxfit.adamw(1e-3, weight_decay=-1.0), "weight_decay"),
        (lambda: jaxfit.clip_by_global_norm(-1.0), "max_norm"),
        (lambda: jaxfit.clip_by_global_norm(0.0), "max_norm"),
        (lambda: jaxfit.clip(-0.5), "max_delta"),
        (lambda: jaxfit.sgd(-0.1), "learning_rate"),
        (lambda: jaxfit.sgd(0.1, momentum=1.2), "decay"),
        (lambda: jaxfit.sgd(0.1, nesterov=True), "nesterov"),
        (lambda: jaxfit.scale_by_schedule(0.1), "step_size_fn"),
        (lambda: jaxfit.scale([1.0, 2.0]), "step_size"),
    ],
)
def test_bad_argument_raises_value_error_naming_it(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


@pytest.mark.parametrize(
    "params,where",
    [
        ("weights", "(root)"),
        ({"w": jnp.ones(2), "n": jnp.arange(3)}, "n"),
        ({"w": jnp.ones(2), "model": object()}, "model"),
    ],
)
def test_init_rejects_params_that_are_not_float_pytrees(params, where):
    with pytest.raises(ValueError, match=rf"`params`.*{where}"):
        jaxfit.adam(1e-3).init(params)


def test_chain_names_an_uncalled_factory():
    with pytest.raises(ValueError, match=r"chain argument 1.*adam\(\.\.\.\)"):
        jaxfit.chain(jaxfit.clip(1.0), jaxfit.adam)


def test_apply_updates_names_mismatched_structure():
    with pytest.raises(ValueError, match="`updates` must have the tree structure"):
        jaxfit.apply_updates({"a": jnp.ones(2)}, {"b": jnp.ones(2)})


def test_apply_updates_keeps_param_dtypes():
    params = {"h": jnp.ones(2, jnp.bfloat16), "f": np.ones(2, np.float32)}
    updates = jax.tree.map(lambda p: jnp.full(p.shape, 0.5, jnp.float32), params)
    new = jaxfit.apply_updates(params, updates)
    assert new["h"].dtype == jnp.bfloat16 and new["f"].dtype == jnp.float32


def test_scale_by_lbfgs_restarts_after_a_step_of_zero():
    """No step (a failed line search) clears the memory: the same memory
    would propose the same failed direction again."""
    tx = jaxfit.transforms.scale_by_lbfgs(memory_size=3)
    w = jnp.array([1.0, 2.0])
    g = jnp.array([3.0, 4.0])
    first, state = tx.update(g, tx.init(w), w)
    _, state = tx.update(jnp.array([4.0, 4.5]), state, w + 1.0)  # a stored pair
    assert int(state.count) == 2
    again, state = tx.update(jnp.array([4.0, 4.5]), state, w + 1.0)  # no step
    assert int(state.count) == 1 and not bool(jnp.any(state.weights_memory))
    # As the first step: the gradient scaled by min(1, 1 / |g|).
    np.testing.assert_allclose(again, jnp.array([4.0, 4.5]) / jnp.hypot(4.0, 4.5))
    np.testing.assert_allclose(first, g / 5.0)
