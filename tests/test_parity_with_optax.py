"""Numerical parity with Optax: 100 steps on nested pytrees (f32, f64), complex."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit
from tests.conftest import random_tree

RNG = np.random.default_rng(0)


def schedule(count):
    return 0.05 * 0.98**count


# Each factory takes a module, jaxfit or optax, and builds the same transformation
# from it; the test runs both and compares.
FACTORIES = [
    ("clip", lambda m: m.clip(0.3)),
    ("clip_by_global_norm", lambda m: m.clip_by_global_norm(0.5)),
    ("scale", lambda m: m.scale(-0.1)),
    ("scale_by_learning_rate", lambda m: m.scale_by_learning_rate(0.1)),
    ("scale_by_learning_rate_schedule", lambda m: m.scale_by_learning_rate(schedule)),
    ("scale_by_schedule", lambda m: m.scale_by_schedule(schedule)),
    ("scale_by_adam", lambda m: m.scale_by_adam()),
    ("scale_by_adam_eps_root", lambda m: m.scale_by_adam(b1=0.8, eps_root=1e-8)),
    ("scale_by_adam_nesterov", lambda m: m.scale_by_adam(nesterov=True)),
    ("adam", lambda m: m.adam(1e-2)),
    ("adam_schedule", lambda m: m.adam(schedule)),
    ("adamw", lambda m: m.adamw(1e-2, weight_decay=0.1)),
    ("adamw_decay_schedule", lambda m: m.adamw(1e-2, weight_decay=schedule)),
    (
        "adamw_masked",
        lambda m: m.adamw(
            1e-2,
            weight_decay=0.1,
            mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
        ),
    ),
    ("trace", lambda m: m.trace(0.9)),
    ("trace_nesterov", lambda m: m.trace(0.9, nesterov=True)),
    ("sgd", lambda m: m.sgd(0.05)),
    ("sgd_momentum", lambda m: m.sgd(0.05, momentum=0.9)),
    ("sgd_nesterov_schedule", lambda m: m.sgd(schedule, momentum=0.9, nesterov=True)),
    ("chain_clip_adam", lambda m: m.chain(m.clip_by_global_norm(1.0), m.adam(1e-2))),
]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,make", FACTORIES, ids=[name for name, _ in FACTORIES])
def test_matches_optax_over_100_steps(name, make, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        params = random_tree(0, dtype)
        assert jax.tree.leaves(params)[0].dtype == dtype
        # Gradients of a quadratic loss plus fixed noise: every step differs,
        # and rounding differences do not grow from step to step.
        noise = jax.tree.map(
            lambda p: jnp.asarray(RNG.normal(size=(100, *p.shape)), dtype), params
        )

        def run(module):
            tx = make(module)

            def step(carry, noise):
                params, state = carry
                grads = jax.tree.map(lambda p, n: 0.5 * p + n, params, noise)
                updates, state = tx.update(grads, state, params)
                return (module.apply_updates(params, updates), state), updates

            (final, _), updates = jax.lax.scan(step, (params, tx.init(params)), noise)
            return final, updates

        ours, our_updates = jax.jit(lambda: run(jaxfit))()
        theirs, their_updates = jax.jit(lambda: run(optax))()
        tol = 1e-5 if dtype == jnp.float32 else 1e-12
        chex.assert_trees_all_close(ours, theirs, rtol=tol, atol=tol)
        chex.assert_trees_all_close(our_updates, their_updates, rtol=tol, atol=tol)
        chex.assert_trees_all_equal_dtypes(ours, params)


# Complex params, in Optax's convention (the gradient passed is conj(jax.grad)).
COMPLEX_CASES = {
    "adam": lambda m: m.adam(0.1),
    "adamw": lambda m: m.adamw(0.1, weight_decay=0.1),
    "scale_by_adam_nesterov": lambda m: m.scale_by_adam(nesterov=True),
    "sgd_momentum": lambda m: m.sgd(0.1, momentum=0.9, nesterov=True),
    "trace": lambda m: m.trace(0.5),
    "clip_by_global_norm": lambda m: m.clip_by_global_norm(1.0),
    "scale_by_learning_rate": lambda m: m.scale_by_learning_rate(0.1),
}


@pytest.mark.parametrize("name", list(COMPLEX_CASES))
def test_complex_params_match_optax(name):
    center = jnp.array([1.0 + 2.0j, -0.5j, 3.0], jnp.complex64)

    def run(module):
        tx = COMPLEX_CASES[name](module)

        def step(carry, _):
            z, state = carry
            grad = jnp.conj(jax.grad(lambda z: jnp.sum(jnp.abs(z - center) ** 2))(z))
            updates, state = tx.update(grad, state, z)
            return (module.apply_updates(z, updates), state), updates

        z0 = jnp.zeros(3, jnp.complex64)
        return jax.lax.scan(step, (z0, tx.init(z0)), length=20)[1]

    chex.assert_trees_all_close(run(jaxfit), run(optax), rtol=1e-5, atol=1e-6)
