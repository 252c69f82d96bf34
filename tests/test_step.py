"""The pure step and its scan: equivalence, safeguards, extra arguments."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit


def linear_loss(params, batch, mask):
    x, y = batch
    return jaxfit.masked_mean((x @ params["w"] + params["b"] - y) ** 2, mask)


def make_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3).astype(np.float32)
    return x, y


PARAMS = {"w": jnp.zeros(3), "b": jnp.zeros(())}


def test_scan_over_a_chunk_equals_a_python_loop_of_steps():
    tx = jaxfit.chain(jaxfit.clip_by_global_norm(1.0), jaxfit.adam(0.05))
    step = jaxfit.make_step(linear_loss, tx)
    x, y = make_data()
    batches = (x.reshape(8, 8, 3), y.reshape(8, 8))
    masks = jnp.ones((8, 8), bool)
    state = jaxfit.init_fit_state(PARAMS, tx)
    scanned, metrics = jax.jit(jaxfit.run_chunk, static_argnums=0)(
        step, state, batches, masks
    )
    looped = state
    jitted = jax.jit(step)
    for k in range(8):
        looped, _ = jitted(looped, (batches[0][k], batches[1][k]), masks[k])
    chex.assert_trees_all_close(scanned, looped, rtol=1e-6, atol=1e-7)
    assert metrics["loss"].shape == (8,)
    assert int(scanned.count) == 8


def test_non_finite_loss_skips_the_update_and_counts_it():
    tx = jaxfit.adam(0.1)
    step = jax.jit(jaxfit.make_step(linear_loss, tx))
    x, y = make_data(8)
    state = jaxfit.init_fit_state(PARAMS, tx)
    state, _ = step(state, (x, y), jnp.ones(8, bool))
    y_bad = y.copy()
    y_bad[3] = np.nan
    after, metrics = step(state, (x, y_bad), jnp.ones(8, bool))
    chex.assert_trees_all_equal(after.params, state.params)
    chex.assert_trees_all_equal(after.opt_state, state.opt_state)
    assert int(after.skipped) == 1 and int(after.count) == 1
    assert bool(metrics["skipped"])


def test_an_all_padding_batch_changes_nothing():
    tx = jaxfit.adam(0.1)
    step = jax.jit(jaxfit.make_step(linear_loss, tx))
    x, y = make_data(8)
    state = jaxfit.init_fit_state(PARAMS, tx)
    after, metrics = step(state, (x, y), jnp.zeros(8, bool))
    chex.assert_trees_all_equal(after, state)
    assert bool(metrics["real"]) is False


def test_best_params_are_those_with_the_lowest_loss():
    tx = jaxfit.sgd(10.0)  # diverges: the first params stay the best
    step = jax.jit(jaxfit.make_step(linear_loss, tx))
    x, y = make_data(16)
    state = jaxfit.init_fit_state(PARAMS, tx)
    losses = []
    for _ in range(4):
        state, metrics = step(state, (x, y), jnp.ones(16, bool))
        losses.append(float(metrics["loss"]))
    assert losses[-1] > losses[0]
    assert float(state.best_loss) == pytest.approx(min(losses))
    chex.assert_trees_all_equal(state.best_params, PARAMS)


def test_padded_rows_do_not_change_the_step():
    tx = jaxfit.sgd(0.1)
    step = jax.jit(jaxfit.make_step(linear_loss, tx))
    x, y = make_data(8)
    state = jaxfit.init_fit_state(PARAMS, tx)
    real, _ = step(state, (x[:5], y[:5]), jnp.ones(5, bool))
    x_pad = np.concatenate([x[:5], np.full((3, 3), 1e6, np.float32)])
    # Finite junk: a NaN would leak through where's gradient (0 * NaN), which
    # is why the driver pads with copies of real rows.
    y_pad = np.concatenate([y[:5], np.full(3, -1e6, np.float32)])
    padded, _ = step(state, (x_pad, y_pad), jnp.arange(8) < 5)
    chex.assert_trees_all_close(padded.params, real.params, rtol=1e-6)


@pytest.mark.parametrize(
    "search",
    [
        lambda: jaxfit.scale_by_backtracking_linesearch(20),
        lambda: jaxfit.scale_by_zoom_linesearch(20),
        lambda: optax.scale_by_backtracking_linesearch(20),
        lambda: optax.scale_by_zoom_linesearch(20),
    ],
    ids=["jaxfit_backtracking", "jaxfit_zoom", "optax_backtracking", "optax_zoom"],
)
def test_line_searches_get_value_grad_value_fn_and_batch(search):
    tx = jaxfit.chain(optax.sgd(1.0), search())
    step = jax.jit(jaxfit.make_step(linear_loss, tx))
    x, y = make_data(32)
    state = jaxfit.init_fit_state(PARAMS, tx)
    first = None
    for _ in range(10):
        state, metrics = step(state, (x, y), jnp.ones(32, bool))
        first = float(metrics["loss"]) if first is None else first
    assert float(metrics["loss"]) < 0.1 * first
    assert "learning_rate" in metrics and float(metrics["learning_rate"]) > 0


def test_a_loss_without_mask_is_called_with_batch_only():
    def loss(params, batch):
        x, y = batch
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    tx = jaxfit.chain(optax.sgd(1.0), optax.scale_by_backtracking_linesearch(10))
    step = jax.jit(jaxfit.make_step(loss, tx))
    state, metrics = step(jaxfit.init_fit_state(PARAMS, tx), make_data(8))
    assert int(state.count) == 1 and np.isfinite(metrics["loss"])


def test_repeated_chunks_compile_once(count_compilations):
    tx = jaxfit.adam(0.01)
    step = jaxfit.make_step(linear_loss, tx)
    run = jax.jit(jaxfit.run_chunk, static_argnums=0)
    x, y = make_data()
    batches = (x.reshape(4, 16, 3), y.reshape(4, 16))
    state = jaxfit.init_fit_state(PARAMS, tx)
    state, _ = run(step, state, batches, jnp.ones((4, 16), bool))
    with count_compilations() as counter:
        for _ in range(3):
            state, _ = run(step, state, batches, jnp.ones((4, 16), bool))
    assert counter.count == 0


def test_non_scalar_loss_is_a_clear_error():
    step = jaxfit.make_step(lambda params, batch: params * batch, jaxfit.sgd(0.1))
    state = jaxfit.init_fit_state(jnp.zeros(3), jaxfit.sgd(0.1))
    with pytest.raises(ValueError, match="`loss` must return a scalar"):
        step(state, jnp.ones(3))


def test_complex_params_follow_optax_convention():
    """The step hands the chain conj(jax.grad), as Optax expects, so sgd
    descends on complex params exactly as an Optax loop that does so."""
    mat = jnp.array([[2.0 + 1.0j, 0.5], [0.3j, 1.5 - 0.5j]], jnp.complex64)
    target = jnp.array([1.0 - 1.0j, 0.5 + 2.0j], jnp.complex64)

    def loss(z, batch):
        return jnp.sum(jnp.abs(mat @ z - target) ** 2) * jnp.mean(batch)

    tx = jaxfit.sgd(0.05)
    z0 = jnp.zeros(2, jnp.complex64)
    step = jax.jit(jaxfit.make_step(loss, tx))
    state = jaxfit.init_fit_state(z0, tx)
    z, opt_state = z0, tx.init(z0)
    batch = jnp.ones(4)
    for _ in range(200):
        state, _ = step(state, batch)
        grad = jnp.conj(jax.grad(loss)(z, batch))
        updates, opt_state = tx.update(grad, opt_state, z)
        z = optax.apply_updates(z, updates)
    chex.assert_trees_all_close(state.params, z, rtol=1e-5)
    assert float(loss(state.params, batch)) < 1e-6
