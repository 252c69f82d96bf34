"""jaxfit.feeder: device chunks in order, epoch ends, padding and flags, the
chunk kept on the device, read-ahead slots, close, and epoch_rng."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import chex
import jax
import numpy as np
import pytest

import jaxfit
from jaxfit import data as _data
from jaxfit.feeder import DeviceChunk, Feeder, epoch_rng
from tests.conftest import PARAMS, TX, loss, make_data


@pytest.mark.parametrize("shuffle, transfers", [(False, 1), (True, 3)])
def test_an_epoch_that_is_one_chunk_in_order_moves_to_the_device_once(
    shuffle, transfers, monkeypatch
):
    puts = []
    device_put = jax.device_put
    monkeypatch.setattr(
        jax, "device_put", lambda *a, **k: puts.append(1) or device_put(*a, **k)
    )
    x, y = make_data(1024)  # 16 batches of 64, no padding
    kwargs = dict(batch_size=64, epochs=3, key=3, shuffle=shuffle, progress=False)
    once = jaxfit.fit(loss, TX, PARAMS, (x, y), **kwargs)
    assert len(puts) == transfers  # one chunk per epoch
    in_two_chunks = jaxfit.fit(loss, TX, PARAMS, (x, y), chunk_batches=8, **kwargs)
    if not shuffle:  # the same steps, chunked differently
        chex.assert_trees_all_close(once.params, in_two_chunks.params, rtol=1e-6)


def _rows(n):
    """``n`` rows that say where they come from: ``x[i] = (i, i + 0.5)``,
    ``y[i] = i``."""
    x = np.stack([np.arange(n), np.arange(n) + 0.5], axis=1).astype(np.float32)
    return x, np.arange(n, dtype=np.int32)


def _drain(feeder):
    """Every item of ``feeder``, its chunks as host arrays, each released."""
    items = []
    for item in feeder:
        if item.batches is not None:
            item = item._replace(
                batches=jax.tree.map(np.asarray, item.batches),
                masks=np.asarray(item.masks),
            )
            feeder.release()
        items.append(item)
    feeder.close()
    return items


def _positions(items):
    return [(item.epoch, item.index, item.steps) for item in items]


class _LoggedSource(_data.ArraySource):
    """An ArraySource that logs each chunk it reads: the thread reading it."""

    def __init__(self, data):
        super().__init__(data)
        self.reads = []

    def chunks(self, *args, **kwargs):
        for chunk in super().chunks(*args, **kwargs):
            self.reads.append(threading.current_thread())
            yield chunk


def _wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_chunks_come_in_order_on_the_device_each_epoch_closed_by_an_end_item():
    x, y = _rows(16)  # 4 batches of 4 rows, 2 batches a chunk
    feeder = Feeder(_data.ArraySource((x, y)), 4, 2, 2)
    items = []
    for item in feeder:
        if item.batches is not None:
            leaves = jax.tree.leaves((item.batches, item.masks))
            assert all(isinstance(leaf, jax.Array) for leaf in leaves)
            feeder.release()
        items.append(item)
    feeder.close()
    assert all(isinstance(item, DeviceChunk) for item in items)
    assert _positions(items) == [
        (0, 0, 2),
        (0, 1, 2),
        (0, None, 0),
        (1, 0, 2),
        (1, 1, 2),
        (1, None, 0),
    ]
    for item in items:
        if item.index is None:
            assert item.batches is None and item.masks is None
            continue
        rows = np.arange(8 * item.index, 8 * item.index + 8)
        np.testing.assert_array_equal(item.batches[1], rows.reshape(2, 4))
        np.testing.assert_array_equal(item.batches[0], x[rows].reshape(2, 4, 2))
        assert item.masks.shape == (2, 4) and np.asarray(item.masks).all()


@pytest.mark.parametrize("flags_only", [False, True])
def test_a_ragged_last_batch_is_padded_with_a_real_row_and_masked(flags_only):
    x, y = _rows(10)  # batches of 4, 4 and 2 rows; 2 batches a chunk
    source = _data.ArraySource((x, y))
    items = _drain(Feeder(source, 4, 2, 1, flags_only=flags_only))
    assert _positions(items) == [(0, 0, 2), (0, 1, 1), (0, None, 0)]
    first, last, _ = items
    # rows 8 and 9, then copies of row 8: the ragged batch's padding, and a
    # whole batch of it filling the chunk
    np.testing.assert_array_equal(last.batches[1], [[8, 9, 8, 8], [8, 8, 8, 8]])
    np.testing.assert_array_equal(last.batches[0][..., 1], last.batches[1] + 0.5)
    if flags_only:  # one flag per batch: is it a step?
        np.testing.assert_array_equal(first.masks, [True, True])
        np.testing.assert_array_equal(last.masks, [True, False])
    else:
        assert first.masks.shape == (2, 4) and first.masks.all()
        np.testing.assert_array_equal(
            last.masks, [[True, True, False, False], [False, False, False, False]]
        )
    assert last.masks.dtype == np.bool_


@pytest.mark.parametrize("shuffle", [False, True])
def test_an_in_order_one_chunk_epoch_is_moved_once_and_reused(shuffle, monkeypatch):
    puts = []
    device_put = jax.device_put
    monkeypatch.setattr(
        jax, "device_put", lambda *a, **k: puts.append(1) or device_put(*a, **k)
    )
    x, y = _rows(8)  # one chunk of 2 batches of 4: every row, no padding
    key = np.array([0, 3], np.uint32) if shuffle else None
    feeder = Feeder(_data.ArraySource((x, y)), 4, 2, 3, rng_key=key)
    chunks = []
    for item in feeder:
        if item.batches is not None:
            chunks.append(item)
            feeder.release()
    feeder.close()
    assert _positions(chunks) == [(epoch, 0, 2) for epoch in range(3)]
    first = jax.tree.leaves((chunks[0].batches, chunks[0].masks))
    for chunk in chunks[1:]:
        again = jax.tree.leaves((chunk.batches, chunk.masks))
        same = [a is b for a, b in zip(again, first, strict=True)]
        assert all(same) if not shuffle else not any(same)
    orders = [np.asarray(c.batches[1]).ravel() for c in chunks]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(8))
    if shuffle:  # read and moved every epoch, in a new order
        assert len(puts) == 3
        assert not np.array_equal(orders[0], orders[1])
    else:  # moved once, in order
        assert len(puts) == 1
        np.testing.assert_array_equal(orders[2], np.arange(8))


def test_a_one_chunk_epoch_resumed_mid_epoch_reads_every_row_in_later_epochs():
    x, y = _rows(8)  # one chunk of 2 batches of 4, in order: kept on the device
    items = _drain(Feeder(_data.ArraySource((x, y)), 4, 2, 2, start=(0, 1)))
    resumed, _, later, _ = items
    assert resumed.steps == 1
    np.testing.assert_array_equal(resumed.batches[1][resumed.masks], [4, 5, 6, 7])
    assert later.steps == 2 and later.masks.all()
    np.testing.assert_array_equal(later.batches[1], np.arange(8).reshape(2, 4))


def test_a_start_position_begins_at_that_epoch_and_batch():
    x, y = _rows(20)  # 5 batches of 4, 2 batches a chunk
    items = _drain(Feeder(_data.ArraySource((x, y)), 4, 2, 3, start=(1, 3)))
    assert _positions(items) == [
        (1, 0, 2),
        (1, None, 0),
        (2, 0, 2),
        (2, 1, 2),
        (2, 2, 1),
        (2, None, 0),
    ]
    np.testing.assert_array_equal(items[0].batches[1], np.arange(12, 20).reshape(2, 4))
    np.testing.assert_array_equal(items[2].batches[1], np.arange(8).reshape(2, 4))


def test_a_shuffled_epoch_is_the_sources_chunks_under_its_epoch_rng():
    x, y = _rows(40)  # 10 batches of 4: chunks of 3, 3, 3 and 1 batches
    source = _data.ArraySource((x, y))
    key = np.array([0, 7], np.uint32)
    items = _drain(Feeder(source, 4, 3, 2, rng_key=key, window=2))
    again = _drain(Feeder(source, 4, 3, 2, rng_key=key, window=2))
    orders = []
    for epoch in (0, 1):
        got = [i for i in items if i.epoch == epoch and i.batches is not None]
        want = list(source.chunks(4, 3, epoch_rng(key, epoch), window=2))
        assert [g.steps for g in got] == [3, 3, 3, 1] and len(want) == 4
        for chunk, (batches, masks) in zip(got, want, strict=True):
            chex.assert_trees_all_equal(chunk.batches, batches)
            np.testing.assert_array_equal(chunk.masks, masks)
        orders.append(np.concatenate([g.batches[1][g.masks] for g in got]))
        np.testing.assert_array_equal(np.sort(orders[-1]), np.arange(40))
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], np.arange(40))
    assert _positions(again) == _positions(items)
    for a, b in zip(again, items, strict=True):
        chex.assert_trees_all_equal((a.batches, a.masks), (b.batches, b.masks))


def test_the_reader_holds_two_chunks_until_the_consumer_releases_one():
    x, y = _rows(8)
    source = _LoggedSource((x, y))
    feeder = Feeder(source, 2, 1, 1)  # 4 chunks of one batch of 2 rows
    items = iter(feeder)
    assert [next(items).index, next(items).index] == [0, 1]
    time.sleep(0.2)
    assert len(source.reads) == 2  # two chunks alive: nothing more is read
    feeder.release()
    _wait_for(lambda: len(source.reads) == 3)
    time.sleep(0.1)
    assert len(source.reads) == 3
    assert next(items).index == 2
    feeder.release()
    assert next(items).index == 3
    feeder.release()
    end = next(items)  # the feeder gives an epoch end's slot back itself
    assert end.index is None and end.batches is None
    assert next(items, None) is None
    reader = source.reads[0]
    assert reader is not threading.current_thread()
    assert all(thread is reader for thread in source.reads)
    feeder.close()


def test_close_stops_the_reader_mid_epoch():
    x, y = _rows(8)
    source = _LoggedSource((x, y))
    feeder = Feeder(source, 2, 1, 3)  # 4 chunks an epoch, 3 epochs
    assert next(iter(feeder)).index == 0
    _wait_for(lambda: len(source.reads) == 2)
    reader = source.reads[0]
    assert reader is not threading.current_thread() and reader.is_alive()
    feeder.close()
    assert not reader.is_alive()
    assert len(source.reads) == 2


def test_close_lets_go_of_the_chunk_kept_on_the_device():
    x, y = _rows(8)  # one chunk an epoch, in order: kept on the device
    feeder = Feeder(_data.ArraySource((x, y)), 4, 2, 1)
    items = list(feeder)
    kept = weakref.ref(items[0].batches[1])
    del items
    gc.collect()
    assert kept() is not None  # held for the next epoch
    feeder.close()
    gc.collect()
    assert kept() is None


def test_chunks_go_where_the_sharding_says():
    mesh = jax.make_mesh((1,), ("batch",))
    spec = jax.sharding.PartitionSpec(None, "batch")
    sharding = jax.sharding.NamedSharding(mesh, spec)
    x, y = _rows(16)
    feeder = Feeder(_data.ArraySource((x, y)), 4, 2, 1, sharding=sharding)
    chunks = 0
    for item in feeder:
        if item.batches is not None:
            for leaf in jax.tree.leaves((item.batches, item.masks)):
                assert leaf.sharding == sharding
            rows = np.arange(8 * item.index, 8 * item.index + 8)
            np.testing.assert_array_equal(item.batches[1], rows.reshape(2, 4))
            chunks += 1
            feeder.release()
    feeder.close()
    assert chunks == 2


def test_epoch_rng_is_a_function_of_the_key_and_the_epoch_only():
    """A resumed fit draws the same epoch orders: the stream must not change."""
    key = np.array([0, 7], np.uint32)

    def draws(key, epoch):
        return epoch_rng(key, epoch).integers(2**31, size=6)

    expected = np.random.default_rng([0, 7, 3]).integers(2**31, size=6)
    np.testing.assert_array_equal(draws(key, 3), expected)
    np.testing.assert_array_equal(draws(key.copy(), 3), expected)
    np.testing.assert_array_equal(draws(np.asarray(jax.random.PRNGKey(7)), 3), expected)
    assert not np.array_equal(draws(key, 4), expected)
    assert not np.array_equal(draws(np.array([0, 8], np.uint32), 3), expected)
