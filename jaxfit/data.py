"""Data sources for the streaming driver: rows in, fixed-shape chunks out.

A chunk is ``K`` batches of ``batch_size`` rows stacked on a leading axis, plus
a bool mask ``[K, batch_size]`` marking real rows. Every chunk of a fit has the
same shape, so the compiled scan never recompiles: the ragged last batch is
padded with copies of a real row (finite values, so nothing leaks through a
masked gradient) and the last chunk is filled with all-padding batches, which
the step treats as no-ops.

Shuffling is memory-safe for memmaps and HDF5: each epoch permutes the order
of contiguous ``batch_size`` blocks (each block is one sequential read), then
permutes the rows inside each chunk in host memory. Rows therefore mix within
a chunk, not across the whole dataset; with chunks of many batches this is
close to a full shuffle.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxfit import _checks

Chunk = tuple[Any, np.ndarray]  # (batches with leading [K, B], mask [K, B])

# Two chunks are alive at once (the one running, the one read ahead).
DEFAULT_CHUNK_BYTES = 256 * 2**20
# XLA:CPU adopts a host buffer aligned to this many bytes as the device
# buffer (no copy); any other it copies itself, ~4x slower than NumPy does
# (2 CPU cores: 58 ms for 64 MiB, against 13 ms by np.copyto into an aligned
# buffer).
CPU_ALIGNMENT = 64
# An iterable's length is unknown and its last chunk is filled with padding
# batches (re-read on every pass): keep such chunks short.
ITERABLE_CHUNK_BATCHES = 64


def _leaves(data: Any) -> list[Any]:
    return jax.tree.leaves(data, is_leaf=lambda x: hasattr(x, "shape"))


def _check_rows(data: Any) -> int:
    leaves = _leaves(data)
    if not leaves:
        raise ValueError("`data` is empty: it holds no arrays")
    lengths = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(
        data, is_leaf=lambda x: hasattr(x, "shape")
    ):
        where = jax.tree_util.keystr(path) or "(root)"
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise ValueError(
                f"`data` must hold arrays; the leaf at {where} is a "
                f"{type(leaf).__name__}"
            )
        if len(leaf.shape) == 0:
            raise ValueError(f"`data` array at {where} is 0-d; rows are the first axis")
        kind = np.dtype(leaf.dtype).kind
        if kind not in "biuf":
            raise ValueError(
                f"`data` array at {where} has dtype {leaf.dtype}; "
                "only numeric and bool arrays can be streamed"
            )
        lengths[where] = leaf.shape[0]
    if len(set(lengths.values())) > 1:
        raise ValueError(
            "`data` arrays must have the same number of rows, got "
            + ", ".join(f"{k}: {v}" for k, v in lengths.items())
        )
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("`data` is empty: its arrays have 0 rows")
    return n


def open_source(data: Any) -> Any:
    """Arrays (tuple/dict, NumPy, memmap, JAX, HDF5 datasets), a path or an
    iterable of batches, as the object the driver reads from."""
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if path.endswith(".npz"):
            # np.load(mmap_mode=...) cannot map members of an .npz, so each
            # array is read once; use .npy memmaps or HDF5 beyond RAM.
            with np.load(path) as archive:
                return ArraySource({k: archive[k] for k in archive.files})
        if path.endswith((".h5", ".hdf5")):
            try:
                import h5py
            except ImportError:
                raise ValueError(
                    f"`data` {path!r} is HDF5, which needs h5py: "
                    'pip install "jaxfit[hdf5]"'
                ) from None
            handle = h5py.File(path, "r")
            return ArraySource(
                {k: handle[k] for k in handle if hasattr(handle[k], "shape")}
            )
        raise ValueError(f"`data` path {path!r} must end in .npz, .h5 or .hdf5")
    if isinstance(data, (tuple, dict)) and all(
        hasattr(x, "shape") for x in _leaves(data)
    ):
        return ArraySource(data)
    if hasattr(data, "shape"):
        return ArraySource(data)
    if isinstance(data, Iterable):
        return IterableSource(data)
    raise ValueError(
        "`data` must be arrays (a tuple or dict of them), an .npz/.h5 path or an "
        f"iterable of batches, got {type(data).__name__}"
    )


class ArraySource:
    """Row-indexable arrays: reads blocks, shuffles within chunks, pads."""

    def __init__(self, data: Any):
        self.num_rows = _check_rows(data)
        self.data = data

    def row_bytes(self) -> int:
        return sum(
            int(np.prod(x.shape[1:], dtype=np.int64)) * np.dtype(x.dtype).itemsize
            for x in _leaves(self.data)
        )

    def example_batch(self, batch_size: int) -> Any:
        return jax.tree.map(
            lambda x: np.asarray(x[:batch_size]),
            self.data,
            is_leaf=lambda x: hasattr(x, "shape"),
        )

    def num_batches(self, batch_size: int) -> int:
        return -(-self.num_rows // batch_size)

    def chunks(
        self, batch_size: int, chunk_batches: int, rng: np.random.Generator | None
    ) -> Iterator[Chunk]:
        """One epoch of chunks; ``rng`` None means in order, no shuffle."""
        full = self.num_rows // batch_size
        order = rng.permutation(full) if rng is not None else np.arange(full)
        groups = [order[i : i + chunk_batches] for i in range(0, full, chunk_batches)]
        tail = np.arange(full * batch_size, self.num_rows)
        if len(tail) and groups and len(groups[-1]) < chunk_batches:
            last = groups.pop()  # the ragged rows join the last, partial chunk
        else:
            last = np.zeros(0, np.int64)
        for blocks in groups:
            yield self._chunk(
                blocks, np.zeros(0, np.int64), batch_size, chunk_batches, rng
            )
        if len(last) or len(tail):
            yield self._chunk(last, tail, batch_size, chunk_batches, rng)

    def _chunk(self, blocks, tail, batch_size, chunk_batches, rng) -> Chunk:
        # Sorted blocks: sequential reads from a memmap or HDF5 file, one per
        # run of adjacent blocks (and the ragged tail, which comes last).
        runs = _runs(np.sort(blocks), batch_size, tail)
        num = sum(stop - start for start, stop in runs)
        # The i-th shuffled row is the perm[i]-th row read.
        perm = rng.permutation(num) if rng is not None else None
        size = chunk_batches * batch_size
        mask = np.zeros(size, bool)
        mask[:num] = True

        def gather(x):
            if isinstance(x, jax.Array):  # stays on its device
                rows = _device_rows(x, runs, perm, size)
                return rows.reshape(chunk_batches, batch_size, *x.shape[1:])
            block = _read_runs(x, runs)
            if perm is not None or num < size:
                # A new, aligned chunk (the CPU device adopts it, see
                # CPU_ALIGNMENT). Padding rows copy the first row read:
                # finite, and masked.
                out = aligned_empty((size, *block.shape[1:]), block.dtype)
                if perm is not None:
                    np.take(block, perm, axis=0, out=out[:num])
                else:
                    out[:num] = block
                out[num:] = block[:1]
                block = out
            # Without shuffle or padding, an in-memory array's chunk is a view:
            # no host copy before the transfer to the device.
            return block.reshape(chunk_batches, batch_size, *x.shape[1:])

        batches = jax.tree.map(gather, self.data, is_leaf=lambda x: hasattr(x, "shape"))
        return batches, mask.reshape(chunk_batches, batch_size)


def aligned_empty(shape: tuple, dtype: Any) -> np.ndarray:
    """An uninitialised array whose data start on a ``CPU_ALIGNMENT`` boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + CPU_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % CPU_ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def cpu_aligned(x: Any) -> Any:
    """``x`` as a C-contiguous, ``CPU_ALIGNMENT``-aligned NumPy array, copied
    only if it is not one already (JAX arrays and other leaves pass through):
    what ``jax.device_put(..., may_alias=True)`` turns into a CPU device
    buffer without a copy of its own."""
    if not isinstance(x, np.ndarray):
        return x
    if x.flags.c_contiguous and x.ctypes.data % CPU_ALIGNMENT == 0:
        return x
    out = aligned_empty(x.shape, x.dtype)
    np.copyto(out, x)
    return out


def _runs(blocks: np.ndarray, batch_size: int, tail: np.ndarray) -> list:
    """``(start, stop)`` row ranges of sorted ``blocks`` then ``tail``, with
    adjacent ranges merged. Computed per block, not per row: cheap for chunks
    of millions of rows."""
    runs: list[list[int]] = []
    if len(blocks):
        breaks = np.flatnonzero(np.diff(blocks) != 1) + 1
        firsts = np.concatenate([[0], breaks])
        lasts = np.concatenate([breaks, [len(blocks)]]) - 1
        runs = [
            [int(blocks[f]) * batch_size, (int(blocks[la]) + 1) * batch_size]
            for f, la in zip(firsts, lasts, strict=True)
        ]
    if len(tail):
        start, stop = int(tail[0]), int(tail[-1]) + 1
        if runs and runs[-1][1] == start:
            runs[-1][1] = stop
        else:
            runs.append([start, stop])
    return [tuple(run) for run in runs]


def _device_rows(x: jax.Array, runs: list, perm: Any, size: int) -> jax.Array:
    """The rows ``_chunk`` would read from ``x``, gathered on ``x``'s device
    (a JAX array goes no round trip through the host)."""
    if len(runs) == 1 and perm is None and runs[0][1] - runs[0][0] == size:
        return x[runs[0][0] : runs[0][1]]
    rows = np.concatenate([np.arange(start, stop) for start, stop in runs])
    first = rows[0]  # padding copies the first row read, as on the host
    if perm is not None:
        rows = rows[perm]
    rows = np.concatenate([rows, np.full(size - len(rows), first)])
    return jnp.take(x, rows, axis=0)


def _read_runs(x: Any, runs: list) -> np.ndarray:
    """The rows of ``runs`` of ``x``, each run read as one slice."""
    if not runs:
        return np.zeros((0, *x.shape[1:]), x.dtype)
    parts = [np.asarray(x[start:stop]) for start, stop in runs]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class IterableSource:
    """Batches as an iterable yields them (Grain, tf.data NumPy iterators...).

    Each batch is padded to ``batch_size`` rows; no shuffling (the iterable's
    own). A one-shot iterator can be read for one epoch only.
    """

    def __init__(self, iterable: Iterable):
        self.iterable = iterable
        self.one_shot = iter(iterable) is iterable
        self._peeked: list[Any] = []

    def first_batch(self) -> Any:
        if not self._peeked:
            iterator = iter(self.iterable)
            try:
                self._peeked.append(next(iterator))
            except StopIteration:
                raise ValueError(
                    "`data` is empty: the iterable yields no batches"
                ) from None
            self._rest = iterator
        return self._peeked[0]

    def _batches(self) -> Iterator[Any]:
        if self._peeked:
            yield from self._peeked
            self._peeked = []
            yield from self._rest
        else:
            yield from iter(self.iterable)

    def chunks(
        self, batch_size: int, chunk_batches: int, rng: Any = None
    ) -> Iterator[Chunk]:
        del rng
        pending: list[Any] = []
        for batch in self._batches():
            pending.append(batch)
            if len(pending) == chunk_batches:
                yield self._chunk(pending, batch_size, chunk_batches)
                pending = []
        if pending:
            yield self._chunk(pending, batch_size, chunk_batches)

    def _chunk(self, batches, batch_size, chunk_batches) -> Chunk:
        template = batches[0]
        mask = np.zeros((chunk_batches, batch_size), bool)
        padded = []
        for k in range(chunk_batches):
            batch = batches[k] if k < len(batches) else template
            rows = _check_rows(batch)
            if rows > batch_size:
                raise ValueError(
                    f"`data` yielded a batch of {rows} rows, more than "
                    f"batch_size={batch_size}"
                )
            if k < len(batches):
                mask[k, :rows] = True
            index = np.concatenate(
                [np.arange(rows), np.zeros(batch_size - rows, np.int64)]
            )
            padded.append(
                jax.tree.map(
                    lambda x, index=index: np.asarray(x)[index],
                    batch,
                    is_leaf=lambda x: hasattr(x, "shape"),
                )
            )
        stacked = jax.tree.map(lambda *xs: np.stack(xs), *padded)
        return stacked, mask


class Plan(NamedTuple):
    """How a source is cut: rows per batch, one example batch (for shape
    checks before any work), batches per epoch (None for an iterable) and
    batches per chunk."""

    batch_size: int
    example: Any
    num_batches: int | None
    chunk_batches: int


def plan(
    source: Any,
    batch_size: int | None,
    chunk_batches: int | None = None,
    chunk_bytes: int | None = None,
) -> Plan:
    """Checks the batching arguments against ``source`` and sizes chunks.

    ``chunk_batches`` defaults to what fits twice in ``chunk_bytes`` (default
    ``DEFAULT_CHUNK_BYTES``), capped at an epoch's batches, or at
    ``ITERABLE_CHUNK_BATCHES`` for an iterable.
    """
    if chunk_batches is not None:
        _checks.positive_int("chunk_batches", chunk_batches)
    if chunk_bytes is not None:
        _checks.positive_int("chunk_bytes", chunk_bytes)
    if isinstance(source, IterableSource):
        example = source.first_batch()
        batch_size = _check_rows(example) if batch_size is None else batch_size
        _checks.positive_int("batch_size", batch_size)
        num_batches = None
        row_bytes = sum(
            int(np.prod(np.shape(x)[1:])) * np.dtype(x.dtype).itemsize
            for x in _leaves(example)
        )
    else:
        if batch_size is None:
            raise ValueError("`batch_size` is required for array data")
        _checks.positive_int("batch_size", batch_size)
        if batch_size > source.num_rows:
            raise ValueError(
                f"`batch_size`={batch_size} is larger than the data "
                f"({source.num_rows} rows)"
            )
        example = source.example_batch(batch_size)
        num_batches = source.num_batches(batch_size)
        row_bytes = source.row_bytes()
    if chunk_batches is None:
        budget = DEFAULT_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
        chunk_batches = max(1, budget // max(1, 2 * batch_size * row_bytes))
        chunk_batches = int(min(chunk_batches, num_batches or ITERABLE_CHUNK_BATCHES))
    return Plan(batch_size, example, num_batches, chunk_batches)


def prefetch(chunks: Iterator[Any], put: Callable[[Any], Any], depth: int = 2):
    """Moves chunks to the device on a background thread, ``depth`` ahead.

    At most ``depth`` chunks are alive at once (the one the consumer runs and
    the ones read ahead): the worker takes a slot before reading a chunk, and
    the consumer gives it back when it asks for the next one, so the host and
    device memory for chunks stays within the budget whatever the data size.
    """
    buffer: queue.Queue = queue.Queue()
    slots = threading.Semaphore(depth)
    done = object()
    stop = threading.Event()

    def worker():
        try:
            iterator = iter(chunks)
            while True:
                while not slots.acquire(timeout=0.05):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                chunk = next(iterator, done)
                if chunk is done:
                    break
                buffer.put(put(chunk))
                del chunk
            buffer.put(done)
        except BaseException as error:  # re-raised in the consumer
            buffer.put(error)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
            del item
            slots.release()  # the consumer is done with the previous chunk
    finally:
        stop.set()
        thread.join()
