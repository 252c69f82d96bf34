"""Shared fixtures: compilation counting and random pytrees."""

from __future__ import annotations

import contextlib
import os

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import settings

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
