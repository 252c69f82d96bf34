"""jaxfit and Optax mix both ways; Flax linen and nnx drive jaxfit chains."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import jaxfit
from tests.conftest import random_tree


def _run(tx, params, steps=20):
    """Steps on a fixed quadratic; returns the final params."""

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: optax.tree.norm(p, squared=True))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params


@pytest.mark.parametrize(
    "mixed",
    [
        lambda: optax.chain(jaxfit.clip_by_global_norm(1.0), optax.adam(1e-3)),
        lambda: jaxfit.chain(optax.clip_by_global_norm(1.0), jaxfit.adam(1e-3)),
        lambda: jaxfit.chain(jaxfit.clip_by_global_norm(1.0), jaxfit.adam(1e-3)),
    ],
    ids=["optax_chain_of_jaxfit", "jaxfit_chain_of_optax", "all_jaxfit"],
)
def test_mixed_chains_match_pure_optax(mixed):
    params = random_tree(0)
    pure = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    chex.assert_trees_all_close(
        _run(mixed(), params), _run(pure, params), rtol=1e-6, atol=1e-7
    )


def test_jaxfit_chain_holds_optax_clip_and_jaxfit_adam():
    params = random_tree(1)
    tx = jaxfit.chain(optax.clip(1.0), jaxfit.adam(1e-3))
    reference = optax.chain(optax.clip(1.0), optax.adam(1e-3))
    chex.assert_trees_all_close(
        _run(tx, params), _run(reference, params), rtol=1e-6, atol=1e-7
    )


def test_extra_arguments_reach_members_that_take_them():
    # optax.polyak_sgd needs `value`; jaxfit's clip must ignore it.
    tx = jaxfit.chain(jaxfit.clip(1.0), optax.polyak_sgd(max_learning_rate=1.0))
    params = jnp.array([2.0, -1.0])
    value = jnp.sum(params**2)
    grads = 2 * params
    updates, _ = tx.update(grads, tx.init(params), params, value=value)
    reference = optax.chain(optax.clip(1.0), optax.polyak_sgd(max_learning_rate=1.0))
    expected, _ = reference.update(grads, reference.init(params), params, value=value)
    chex.assert_trees_all_close(updates, expected, rtol=1e-6)
    assert not jnp.allclose(updates, 0.0)


def test_inject_hyperparams_schedules_a_jaxfit_learning_rate():
    tx = optax.inject_hyperparams(jaxfit.adam)(
        learning_rate=optax.linear_schedule(1.0, 0.0, 4)
    )
    params = jnp.ones(2)
    state = tx.init(params)
    rates = []
    for _ in range(3):
        _, state = jax.jit(tx.update)(params, state, params)
        rates.append(float(state.hyperparams["learning_rate"]))
    # The state records the rate each update used: the schedule at counts 0, 1, 2.
    assert rates == pytest.approx([1.0, 0.75, 0.5])


def test_flax_linen_train_state_applies_jaxfit_gradients_under_jit():
    from flax import linen as nn
    from flax.training import train_state

    model = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(1)])
    x = jnp.linspace(-1, 1, 32)[:, None]
    y = jnp.sin(3 * x)
    params = model.init(jax.random.key(0), x)["params"]

    def loss_fn(params):
        return jnp.mean((model.apply({"params": params}, x) - y) ** 2)

    def train(tx):
        state = train_state.TrainState.create(
            apply_fn=model.apply, params=params, tx=tx
        )

        @jax.jit
        def step(state):
            grads = jax.grad(loss_fn)(state.params)
            return state.apply_gradients(grads=grads)

        for _ in range(100):
            state = step(state)
        return state

    ours = train(jaxfit.chain(jaxfit.clip_by_global_norm(1.0), jaxfit.adam(1e-2)))
    theirs = train(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)))
    assert loss_fn(ours.params) < 0.5 * loss_fn(params)
    chex.assert_trees_all_close(ours.params, theirs.params, rtol=1e-4, atol=1e-6)


def test_flax_nnx_optimizer_with_jaxfit_chain():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(1, 8, rngs=rngs)
            self.out = nnx.Linear(8, 1, rngs=rngs)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    model = Model(nnx.Rngs(0))
    tx = jaxfit.chain(jaxfit.clip_by_global_norm(1.0), jaxfit.adamw(1e-2))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jnp.linspace(-1, 1, 32)[:, None]
    y = jnp.sin(3 * x)

    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    first = step(model, optimizer)
    for _ in range(100):
        last = step(model, optimizer)
    assert last < 0.5 * first
