"""Property tests (hypothesis) for clipping and non-finite gradients."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jaxfit

# XLA on CPU flushes subnormals to zero; they are not what is tested here.
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False, width=32)
arrays = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=0, max_dims=2, max_side=5), elements=finite
)
trees = st.dictionaries(st.sampled_from("abcd"), arrays, min_size=1)
positive = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


def _norm64(tree):
    return float(
        np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in tree.values()))
    )


@settings(max_examples=60, deadline=None)
@given(tree=trees, max_norm=positive)
def test_clipped_global_norm_never_exceeds_max_norm(tree, max_norm):
    tx = jaxfit.clip_by_global_norm(max_norm)
    out, _ = tx.update(tree, tx.init(tree))
    # Up to float32 rounding of the rescaled elements.
    assert _norm64(out) <= max_norm * (1 + 1e-6)
    # Within the limit nothing changes.
    if _norm64(tree) < max_norm * (1 - 1e-6):
        for key in tree:
            np.testing.assert_allclose(out[key], tree[key], rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(tree=trees, max_delta=positive)
def test_clip_bounds_every_element(tree, max_delta):
    tx = jaxfit.clip(max_delta)
    out, _ = tx.update(tree, tx.init(tree))
    for key in tree:
        assert np.all(np.abs(np.asarray(out[key])) <= np.float32(max_delta))
        inside = np.abs(tree[key]) <= np.float32(max_delta)
        np.testing.assert_array_equal(np.asarray(out[key])[inside], tree[key][inside])


bad = st.sampled_from([np.nan, np.inf, -np.inf])


@settings(max_examples=40, deadline=None)
@given(tree=trees, value=bad, data=st.data())
def test_non_finite_gradients_are_never_made_finite(tree, value, data):
    key = data.draw(st.sampled_from(sorted(tree)))
    poisoned = dict(tree)
    poisoned[key] = np.append(np.ravel(tree[key]), np.float32(value))
    for tx in (
        jaxfit.clip(1.0),
        jaxfit.clip_by_global_norm(1.0),
        jaxfit.chain(jaxfit.clip_by_global_norm(1.0), jaxfit.adam(1e-3)),
    ):
        out, _ = tx.update(poisoned, tx.init(poisoned), poisoned)
        assert not np.all(np.isfinite(np.asarray(out[key])))
