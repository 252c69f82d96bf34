"""jaxfit.data: chunks of array sources (alignment, device gathers, shuffle
windows, padding), iterable sources, plan, and the Prefetcher."""

from __future__ import annotations

import threading
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfit
from jaxfit import data as _data
from tests.conftest import PARAMS, TX, loss, make_data


def test_host_chunks_are_aligned_for_the_cpu_device_without_needless_copies():
    from jaxfit.data import CPU_ALIGNMENT, cpu_aligned

    raw = np.arange(1 + 4 * 1024, dtype=np.float32)
    for x in (raw[1:], raw[::2], raw[1:].reshape(64, 64)):  # unaligned, strided
        out = cpu_aligned(x)
        assert out.ctypes.data % CPU_ALIGNMENT == 0 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, x)
        assert cpu_aligned(out) is out  # already aligned: no copy
        device = jax.device_put(out, may_alias=True)
        if jax.devices()[0].platform == "cpu":  # adopted, not copied
            assert device.unsafe_buffer_pointer() == out.ctypes.data
    jax_array = jnp.ones(3)
    assert cpu_aligned(jax_array) is jax_array


def test_jax_arrays_are_chunked_on_their_device_like_numpy_arrays(monkeypatch):
    x, y = make_data(1000)  # shuffled, a ragged batch, a padded last chunk
    kwargs = dict(batch_size=64, epochs=2, chunk_batches=6, key=4, progress=False)
    host = jaxfit.fit(loss, TX, PARAMS, (x, y), **kwargs)
    gather_on_host = jaxfit.data._host_gather

    def host_gather(leaves, *args):
        assert not any(isinstance(x, jax.Array) for x in leaves), (
            "a JAX array went through the host"
        )
        return gather_on_host(leaves, *args)

    monkeypatch.setattr(jaxfit.data, "_host_gather", host_gather)
    device = jaxfit.fit(loss, TX, PARAMS, (jnp.asarray(x), jnp.asarray(y)), **kwargs)
    chex.assert_trees_all_equal(device.params, host.params)


def test_every_row_is_seen_once_per_epoch_whatever_the_shuffle():
    n = 1003
    seen = []

    def record(params, batch, mask):
        ids, _ = batch
        jax.debug.callback(
            lambda i, m: seen.append(np.asarray(i)[np.asarray(m)]), ids, mask
        )
        return jnp.sum(params) * 0.0

    ids = np.arange(n, dtype=np.float32)
    jaxfit.fit(
        record,
        jaxfit.sgd(0.1),
        jnp.zeros(1),
        (ids, ids),
        batch_size=10,
        chunk_batches=7,
        key=1,
        progress=False,
    )
    everything = np.sort(np.concatenate(seen))
    np.testing.assert_array_equal(everything, ids)
    assert not np.array_equal(np.concatenate(seen), ids)  # shuffled


def test_padding_never_copies_a_non_finite_row():
    """A NaN row first in the last chunk costs its own batch only: the ragged
    batch's padding copies a finite row."""
    x, y = make_data(1000)  # 15 full batches of 64 and a ragged one
    x[15 * 64] = np.nan  # the first row of the last, ragged batch
    source = jaxfit.data.ArraySource((x, y))
    *_, (batches, mask) = source.chunks(64, 4, None)
    padding = batches[0][~mask]
    assert padding.size and np.isfinite(padding).all()
    result = jaxfit.fit(
        loss,
        TX,
        PARAMS,
        (x, y),
        batch_size=64,
        shuffle=False,
        chunk_batches=4,
        progress=False,
    )
    assert int(result.state.skipped) == 1


def test_float64_data_stays_float64_under_a_scoped_enable_x64():
    """The reader thread does not inherit ``jax.enable_x64``: fit passes it
    on, so float64 rows reach the loss as float64."""
    seen = []

    def loss(params, batch, mask):
        seen.append(batch[0].dtype)
        return jaxfit.masked_mean((params * batch[0] - batch[1]) ** 2, mask)

    x = np.linspace(0, 1, 300)
    with jax.enable_x64(True):
        jaxfit.fit(
            loss,
            jaxfit.sgd(0.1),
            jnp.zeros((), jnp.float64),
            (x, 2 * x),
            batch_size=64,
            chunk_batches=2,
            key=1,
            progress=False,
        )
    assert seen and all(dtype == jnp.float64 for dtype in seen)


def _wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_an_epochs_order_depends_on_the_windows_not_on_chunks_or_start():
    """Rows are shuffled within windows of 4 batches; the epoch's order is
    the same whatever the chunks and the batch a pass starts from."""
    ids = np.arange(103)  # 10 batches of 10 and a ragged one of 3
    source = _data.ArraySource(ids)

    def order(chunk_batches, start=0, seed=0):
        rng = np.random.default_rng(seed)
        chunks = source.chunks(10, chunk_batches, rng, window=4, start=start)
        return np.concatenate([batches[mask] for batches, mask in chunks])

    base = order(3)
    np.testing.assert_array_equal(np.sort(base), ids)  # every row once
    assert not np.array_equal(base, ids)
    np.testing.assert_array_equal(order(5), base)
    for chunk_batches in (2, 3):  # from the middle of a window
        np.testing.assert_array_equal(order(chunk_batches, start=5), base[50:])
    assert not np.array_equal(order(3, seed=1), base)
    # windows of 4 whole batches, the ragged tail joining the last (partial) one
    assert [len(set(base[a:b] // 10)) for a, b in ((0, 40), (40, 80))] == [4, 4]
    assert len(set(base[80:] // 10)) == 3 and set(base[100:]) != {100, 101, 102}


def test_an_iterables_batches_are_padded_and_its_last_chunk_filled():
    x = np.array([0, 1, 2, 3, 4, 5, 6, 7, np.nan, 9], np.float32)
    batches = [(x[i : i + 4], np.arange(i, min(i + 4, 10))) for i in (0, 4, 8)]
    source = _data.IterableSource(batches)
    assert not source.one_shot and _data.IterableSource(iter(batches)).one_shot
    first, last = source.chunks(4, 2)
    np.testing.assert_array_equal(first[0][1], [[0, 1, 2, 3], [4, 5, 6, 7]])
    assert first[1].all()
    # the ragged batch's padding copies its first finite row (9, not the
    # NaN row 8); a whole padding batch fills the chunk
    np.testing.assert_array_equal(last[0][1], [[8, 9, 9, 9], [8, 9, 9, 9]])
    np.testing.assert_array_equal(last[0][0][0, 1:], [9, 9, 9])
    np.testing.assert_array_equal(
        last[1], [[True, True, False, False], [False, False, False, False]]
    )
    (resumed,) = source.chunks(4, 2, start=1)  # re-iterable, from batch 1
    np.testing.assert_array_equal(resumed[0][1], [[4, 5, 6, 7], [8, 9, 9, 9]])
    with pytest.raises(ValueError, match="batch of 4 rows, more than batch_size=3"):
        next(source.chunks(3, 2))


def test_plan_fits_two_chunks_in_the_byte_budget():
    x, y = np.zeros((1000, 3), np.float32), np.zeros(1000, np.float32)
    source = _data.ArraySource((x, y))  # 16 bytes a row, 1 more of mask
    budget = 2 * 10 * (16 + 1) * 7  # two chunks of 7 batches of 10 rows
    planned = _data.plan(source, 10, chunk_bytes=budget)
    assert planned.batch_size == 10 and planned.num_batches == 100
    assert planned.chunk_batches == 7
    assert planned.example[0].shape == (10, 3) and planned.example[1].shape == (10,)
    # a shuffle's index costs 4 bytes a row more: 2380 // (2 * 10 * 21)
    assert _data.plan(source, 10, chunk_bytes=budget, shuffle=True).chunk_batches == 5
    assert _data.plan(source, 10).chunk_batches == 100  # capped at an epoch
    assert _data.plan(source, 10, chunk_bytes=1).chunk_batches == 1
    assert _data.plan(source, 10, 3, chunk_bytes=1).chunk_batches == 3  # as given
    iterable = _data.IterableSource([(x[:8], y[:8])] * 500)
    from_iterable = _data.plan(iterable, None)  # rows of its first batch
    assert from_iterable.batch_size == 8 and from_iterable.num_batches is None
    assert from_iterable.chunk_batches == _data.ITERABLE_CHUNK_BATCHES


@pytest.mark.parametrize(
    "args, message",
    [
        ((None,), "`batch_size` is required"),
        ((2, 0), "`chunk_batches`"),
        ((2, None, 0), "`chunk_bytes`"),
    ],
)
def test_plan_refuses_bad_batching(args, message):
    with pytest.raises(ValueError, match=message):
        _data.plan(_data.ArraySource(np.ones((10, 2))), *args)


def test_the_prefetcher_reads_two_ahead_and_frees_a_slot_on_the_next_request():
    read = []

    def chunks():
        for i in range(5):
            read.append(i)
            yield i

    prefetcher = _data.Prefetcher(chunks(), lambda chunk: 10 * chunk, depth=2)
    _wait_for(lambda: len(read) == 2)
    assert next(prefetcher) == 0  # put on the reader
    time.sleep(0.2)
    assert read == [0, 1]  # chunk 0 is in use until the next is asked for
    assert next(prefetcher) == 10
    _wait_for(lambda: len(read) == 3)
    assert list(prefetcher) == [20, 30, 40]
    prefetcher.close()


def test_a_readers_error_reaches_the_consumer_after_the_chunks_before_it():
    def chunks():
        yield 1
        raise OSError("disk gone")

    prefetcher = _data.Prefetcher(chunks(), lambda chunk: chunk)
    assert next(prefetcher) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(prefetcher)
    prefetcher.close()


def test_prefetch_stops_its_reader_when_closed_early():
    readers = []

    def put(chunk):
        readers.append(threading.current_thread())
        return chunk

    chunks = _data.prefetch(iter(range(100)), put, depth=2)
    assert next(chunks) == 0
    _wait_for(lambda: len(readers) == 2)
    reader = readers[0]
    assert reader is not threading.current_thread() and reader.is_alive()
    chunks.close()
    assert not reader.is_alive()
    assert len(readers) == 2
