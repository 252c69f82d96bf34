"""Line searches through Flax: linen ``TrainState`` and ``nnx.Optimizer``."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxfit
from jaxfit.flax import apply_gradients, nnx_value_fn

flax = pytest.importorskip("flax")
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402
from flax.training.train_state import TrainState  # noqa: E402

from tests.test_linesearch import count_compiles  # noqa: E402


def _data(num_batches=6, batch_size=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_batches, batch_size, 3)).astype(np.float32)
    y = np.tanh(x @ np.array([1.0, -2.0, 0.5], np.float32))[..., None]
    return jnp.asarray(x), jnp.asarray(y)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.tanh(nn.Dense(8)(x)))


class _WithBatchStats(TrainState):
    """A subclass with an extra field, as users write for batch statistics."""

    extra: jax.Array = None


@pytest.mark.parametrize("linesearch", ["backtracking", "zoom"])
def test_linen_train_state_with_apply_gradients_helper(linesearch):
    x, y = _data()
    model = _MLP()
    params = model.init(jax.random.key(0), x[0])["params"]
    ls = (
        jaxfit.scale_by_backtracking_linesearch(20)
        if linesearch == "backtracking"
        else jaxfit.scale_by_zoom_linesearch(20)
    )
    state = _WithBatchStats.create(
        apply_fn=model.apply,
        params=params,
        tx=jaxfit.chain(optax.sgd(1.0), ls),
        extra=jnp.zeros(()),
    )

    def loss(params, batch):
        xb, yb = batch
        return jnp.mean((model.apply({"params": params}, xb) - yb) ** 2)

    @jax.jit
    def epoch(state):
        def body(state, batch):
            value, grads = jax.value_and_grad(loss)(state.params, batch)
            state = apply_gradients(
                state, grads=grads, value=value, value_fn=loss, batch=batch
            )
            return state, (value, loss(state.params, batch))

        return jax.lax.scan(body, state, (x, y))

    state, (before, after) = epoch(state)
    first = float(jnp.mean(before))
    with count_compiles() as compiles:
        for _ in range(4):
            state, (before, after) = epoch(state)
    assert compiles[0] == 0
    assert bool(jnp.all(after <= before))  # each batch's own loss went down
    assert float(jnp.mean(after)) < 0.5 * first
    assert int(state.step) == 5 * x.shape[0]
    assert float(state.extra) == 0.0  # other fields kept


def test_linen_train_state_plain_apply_gradients_lacks_the_arguments():
    """Why the helper exists: linen passes no value/grad/value_fn."""
    params = {"w": jnp.zeros(2)}
    tx = jaxfit.scale_by_zoom_linesearch(10)
    state = TrainState.create(apply_fn=None, params=params, tx=tx)
    with pytest.raises(TypeError, match="value"):
        state.apply_gradients(grads=params)


class _Model(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 8, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def _nnx_loss(model, batch):
    xb, yb = batch
    return jnp.mean((model(xb) - yb) ** 2)


LINESEARCHES = {
    "backtracking": lambda: jaxfit.scale_by_backtracking_linesearch(20),
    "zoom": lambda: jaxfit.scale_by_zoom_linesearch(20),
    "optax_backtracking": lambda: optax.scale_by_backtracking_linesearch(20),
}


@pytest.mark.parametrize("name", list(LINESEARCHES))
def test_nnx_optimizer_with_nnx_value_fn(name):
    x, y = _data()
    model = _Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(
        model, optax.chain(optax.sgd(1.0), LINESEARCHES[name]()), wrt=nnx.Param
    )

    @nnx.jit
    def train_step(model, optimizer, batch):
        value, grads = nnx.value_and_grad(_nnx_loss)(model, batch)
        optimizer.update(
            model,
            grads,
            value=value,
            grad=grads,
            value_fn=nnx_value_fn(_nnx_loss, model),
            batch=batch,
        )
        return value, _nnx_loss(model, batch)

    first = float(_nnx_loss(model, (x[0], y[0])))
    train_step(model, optimizer, (x[0], y[0]))
    with count_compiles() as compiles:
        for _ in range(3):
            for i in range(x.shape[0]):
                before, after = train_step(model, optimizer, (x[i], y[i]))
                assert float(after) <= float(before)
    if not name.startswith("optax"):  # Optax's state changes dtype: recompiles
        assert compiles[0] == 0
    assert float(_nnx_loss(model, (x[0], y[0]))) < 0.5 * first


def test_nnx_value_fn_signature_names_the_loss_arguments():
    model = _Model(nnx.Rngs(0))

    def loss(model, batch, *, weight=1.0):
        return weight * _nnx_loss(model, batch)

    value_fn = nnx_value_fn(loss, model)
    assert list(inspect.signature(value_fn).parameters) == ["params", "batch", "weight"]
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    x, y = _data()
    np.testing.assert_allclose(
        value_fn(params, batch=(x[0], y[0]), weight=2.0),
        2 * _nnx_loss(model, (x[0], y[0])),
        rtol=1e-6,
    )
