"""Shared fixtures: compilation counting, random pytrees, a streamed fit's
loss and data (tests of fit, of the data sources and of the feeder)."""

from __future__ import annotations

import contextlib
import os

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import settings

import jaxfit

# Property tests draw the same examples on every run, so CI is reproducible;
# HYPOTHESIS_PROFILE=explore draws new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_compilations = [0]


def _on_event(event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event == _BACKEND_COMPILE:
        _compilations[0] += 1


jax.monitoring.register_event_duration_secs_listener(_on_event)


class CompileCounter:
    """Counts XLA backend compilations inside ``with counter:`` blocks."""

    def __init__(self):
        self.count = 0

    @contextlib.contextmanager
    def __call__(self):
        start = _compilations[0]
        try:
            yield self
        finally:
            self.count = _compilations[0] - start


@pytest.fixture
def count_compilations():
    """``with count_compilations() as c: ...`` then ``c.count``."""
    return CompileCounter()


def random_tree(seed: int, dtype=jnp.float32):
    """A nested pytree (dict, tuple, list, scalar and matrix leaves)."""
    rng = np.random.default_rng(seed)

    def leaf(*shape):
        return jnp.asarray(rng.normal(size=shape), dtype)

    return {
        "dense": {"w": leaf(4, 3), "b": leaf(3)},
        "pair": (leaf(5), leaf()),
        "stack": [leaf(2, 2, 2)],
    }


def loss(params, batch, mask):
    """A masked linear least-squares loss of ``(x, y)`` batches."""
    x, y = batch
    return jaxfit.masked_mean((x @ params["w"] + params["b"] - y) ** 2, mask)


def make_data(n=1000, seed=0):
    """``n`` rows of ``x`` (3 columns) and ``y = x @ [1, -2, 0.5] + 0.3 +`` noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.01 * rng.normal(size=n)).astype(
        np.float32
    )
    return x, y


PARAMS = {"w": jnp.zeros(3), "b": jnp.zeros(())}
TX = jaxfit.chain(jaxfit.clip_by_global_norm(1.0), jaxfit.adam(0.05))
