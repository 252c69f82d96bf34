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
        self,
        batch_size: int,
        chunk_batches: int,
        rng: np.random.Generator | None,
        *,
        window: int | None = None,
        start: int = 0,
    ) -> Iterator[Chunk]:
        """One epoch of chunks from batch ``start`` on; ``rng`` None means in
        order, no shuffle.

        Rows are shuffled within windows of ``window`` batches (default: a
        chunk's). The epoch's order of batches depends on the key, the epoch,
        ``batch_size`` and ``window`` only, not on ``chunk_batches`` or
        ``start``: a fit resumed with other chunks continues the same stream.
        """
        windows = _windows(self.num_rows, batch_size, window or chunk_batches, rng)
        cut = _chunk_pieces(windows, self.num_rows, batch_size, chunk_batches, start)
        for pieces in cut:
            yield self._chunk(pieces, batch_size, chunk_batches)

    def _chunk(self, pieces, batch_size, chunk_batches) -> Chunk:
        size = chunk_batches * batch_size
        num = sum(o1 - o0 for _, o0, o1, _ in pieces)
        mask = np.zeros(size, bool)
        mask[:num] = True
        reads = [read for piece in pieces for read in _piece_reads(*piece)]
        leaves, treedef = jax.tree.flatten(
            self.data, is_leaf=lambda x: hasattr(x, "shape")
        )
        if any(isinstance(x, jax.Array) for x in leaves):
            out = _device_gather(leaves, reads, num, size)
        else:
            out = _host_gather(leaves, reads, num, size)
        batches = [x.reshape(chunk_batches, batch_size, *x.shape[1:]) for x in out]
        return jax.tree.unflatten(treedef, batches), mask.reshape(
            chunk_batches, batch_size
        )


class _Window(NamedTuple):
    """The rows of one shuffle window: read as ``runs`` (sorted ``(start,
    stop)`` row ranges), the i-th row read going to position ``dest[i]`` of
    the window (``dest`` None: in the order read)."""

    runs: list
    num: int
    dest: np.ndarray | None


def _windows(num_rows, batch_size, window, rng) -> Iterator[_Window]:
    """An epoch's windows in order: blocks of ``batch_size`` rows permuted,
    ``window`` blocks a window (the ragged tail joins the last, partial one),
    rows permuted within each window."""
    full = num_rows // batch_size
    order = rng.permutation(full) if rng is not None else np.arange(full)
    groups = [order[i : i + window] for i in range(0, full, window)]
    tail = np.arange(full * batch_size, num_rows)
    if len(tail) and groups and len(groups[-1]) < window:
        last = groups.pop()
    else:
        last = np.zeros(0, np.int64)
    empty = np.zeros(0, np.int64)
    for blocks in groups:
        yield _window(blocks, empty, batch_size, rng)
    if len(last) or len(tail):
        yield _window(last, tail, batch_size, rng)


def _window(blocks, tail, batch_size, rng) -> _Window:
    # Sorted blocks: sequential reads from a memmap or HDF5 file, one per
    # run of adjacent blocks (and the ragged tail, which comes last).
    runs = _runs(np.sort(blocks), batch_size, tail)
    num = sum(stop - start for start, stop in runs)
    if rng is None:
        return _Window(runs, num, None)
    # The i-th row read goes to position dest[i]: a uniformly random
    # permutation, shuffled in place in int32 where it fits, since the index
    # is part of a chunk's memory (see `plan`).
    dest = np.arange(num, dtype=np.int32 if num < 2**31 else np.int64)
    rng.shuffle(dest)
    return _Window(runs, num, dest)


def _chunk_pieces(windows, num_rows, batch_size, chunk_batches, start):
    """Per chunk, its pieces ``(window, o0, o1, offset)``: the window's
    positions ``o0:o1`` fill the chunk from row ``offset``."""
    windows = iter(windows)
    current, begin = next(windows), 0  # begin: the window's first epoch row
    for r0 in range(start * batch_size, num_rows, chunk_batches * batch_size):
        r1 = min(r0 + chunk_batches * batch_size, num_rows)
        pieces, r = [], r0
        while r < r1:
            while r >= begin + current.num:
                begin += current.num
                current = next(windows)
            o0, o1 = r - begin, min(r1 - begin, current.num)
            pieces.append((current, o0, o1, r - r0))
            r = begin + o1
        yield pieces


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


# Rows read per slice: bounds the temporary a slice of an HDF5 dataset (or
# the positions of a shuffled read) takes beside the chunk.
_READ_ROWS = 1 << 14


def _piece_reads(window, o0, o1, offset):
    """``(src, dest)`` pairs: source rows ``src`` go to chunk rows ``dest``
    (each a slice or an index array), for the window's positions
    ``o0:o1`` placed from chunk row ``offset``."""
    starts = np.cumsum([0] + [stop - start for start, stop in window.runs])
    if o0 == 0 and o1 == window.num:  # a whole window: read run by run
        for (start, stop), first in zip(window.runs, starts, strict=False):
            for a in range(start, stop, _READ_ROWS):
                b = min(a + _READ_ROWS, stop)
                i, j = first + a - start, first + b - start
                dest = (
                    slice(offset + i, offset + j)
                    if window.dest is None
                    else window.dest[i:j] + offset
                )
                yield slice(a, b), dest
        return
    # Part of a window (a fit resumed with other chunks): row by row.
    if window.dest is None:
        read = np.arange(o0, o1)
    else:
        read = np.flatnonzero((window.dest >= o0) & (window.dest < o1))
    run = np.searchsorted(starts, read, side="right") - 1
    rows = np.asarray(window.runs, np.int64)[run, 0] + read - starts[run]
    dest = (read if window.dest is None else window.dest[read]) - o0 + offset
    for a in range(0, len(rows), _READ_ROWS):
        yield rows[a : a + _READ_ROWS], dest[a : a + _READ_ROWS]


def _host_gather(leaves, reads, num, size):
    """Each leaf's chunk: a new aligned array (the CPU device adopts it, see
    CPU_ALIGNMENT) filled slice by slice, no copy of the whole chunk
    beside it; or, for one slice in order filling the chunk, a view."""
    whole = _one_slice(reads, num, size)
    if whole is not None:
        return [np.asarray(x[whole]) for x in leaves]
    out = [aligned_empty((size, *x.shape[1:]), x.dtype) for x in leaves]
    for src, dest in reads:
        for x, o in zip(leaves, out, strict=True):
            o[dest] = x[src]
    pad = _first_finite_row(out, num)
    for o in out:
        o[num:] = o[pad]
    return out


def _one_slice(reads, num, size) -> slice | None:
    """The source rows, if they are one slice read in order that fills the
    chunk (an in-memory array's chunk is then a view: no host copy)."""
    if num != size or not all(
        isinstance(src, slice) and isinstance(dest, slice) for src, dest in reads
    ):
        return None
    starts = [src.start - dest.start for src, dest in reads]
    if len(set(starts)) != 1 or reads[0][1].start != 0:
        return None
    return slice(starts[0], starts[0] + size)


def _first_finite_row(arrays, num) -> int:
    """The first row finite in every array: what padding rows copy (a NaN
    row copied into the padding would cost one more skipped batch)."""
    step = 64
    for a in range(0, num, step):
        ok = np.ones(min(step, num - a), bool)
        for x in arrays:
            if np.dtype(x.dtype).kind in "fc":
                ok &= np.isfinite(x[a : a + len(ok)]).reshape(len(ok), -1).all(axis=1)
        if ok.any():
            return a + int(np.argmax(ok))
    return 0


def _device_gather(leaves, reads, num, size):
    """The chunk of JAX-array leaves, gathered on their device (no round
    trip through the host); padding copies the first row finite in all."""
    rows = np.zeros(size, np.int64)
    for src, dest in reads:
        rows[dest] = np.arange(src.start, src.stop) if isinstance(src, slice) else src
    if num == size and np.array_equal(rows, np.arange(rows[0], rows[0] + size)):
        return [x[rows[0] : rows[0] + size] for x in leaves]
    index = jnp.asarray(rows[:num])
    taken = [jnp.take(x, index, axis=0) for x in leaves]
    finite = jnp.ones(num, bool)
    for t in taken:
        if jnp.issubdtype(t.dtype, jnp.inexact):
            finite &= jnp.isfinite(t.reshape(num, -1)).all(axis=1)
    pad = jnp.argmax(finite)
    return [
        jnp.concatenate([t, jnp.broadcast_to(t[pad], (size - num, *t.shape[1:]))])
        for t in taken
    ]


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
        self,
        batch_size: int,
        chunk_batches: int,
        rng: Any = None,
        *,
        window: int | None = None,
        start: int = 0,
    ) -> Iterator[Chunk]:
        """The iterable's batches from batch ``start`` on, ``chunk_batches``
        a chunk (``rng`` and ``window`` unused: the iterable's own order)."""
        del rng, window
        pending: list[Any] = []
        batches = self._batches()
        for _ in range(start):
            next(batches, None)
        for batch in batches:
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
            leaves = [np.asarray(x) for x in _leaves(batch)]
            pad = _first_finite_row(leaves, rows)
            index = np.concatenate(
                [np.arange(rows), np.full(batch_size - rows, pad, np.int64)]
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
    *,
    shuffle: bool = False,
) -> Plan:
    """Checks the batching arguments against ``source`` and sizes chunks.

    ``chunk_batches`` defaults to what fits twice in ``chunk_bytes`` (default
    ``DEFAULT_CHUNK_BYTES``), capped at an epoch's batches, or at
    ``ITERABLE_CHUNK_BATCHES`` for an iterable. A chunk's bytes are its rows'
    data, its row mask and, when ``shuffle``, its shuffle index (4 bytes a
    row): all of it counts against the budget.
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
        index_bytes = 1 + (4 if shuffle and num_batches is not None else 0)
        row_bytes += index_bytes
        chunk_batches = max(1, budget // max(1, 2 * batch_size * row_bytes))
        chunk_batches = int(min(chunk_batches, num_batches or ITERABLE_CHUNK_BATCHES))
    return Plan(batch_size, example, num_batches, chunk_batches)


class Prefetcher:
    """Moves chunks to the device on a background thread, ``depth`` ahead.

    At most ``depth`` chunks are alive at once (the one the device runs and
    the ones read ahead): the worker takes a slot before reading a chunk and
    the slot comes back when the consumer is done with that chunk, so the
    host and device memory for chunks stays within the budget whatever the
    data size. By default a chunk is done when the consumer asks for the
    next one; with ``manual=True`` only when it calls :meth:`release`,
    which a consumer whose device work is asynchronous calls once that work
    has finished (a chunk dispatched is still in use).
    """

    def __init__(
        self,
        chunks: Iterator[Any],
        put: Callable[[Any], Any],
        depth: int = 2,
        *,
        manual: bool = False,
    ):
        self._buffer: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._manual = manual
        # A thread does not inherit a scoped `jax.enable_x64`: without it,
        # float64 chunks would reach the device as float32.
        self._x64 = jax.config.jax_enable_x64
        self._thread = threading.Thread(
            target=self._work, args=(chunks, put), daemon=True
        )
        self._thread.start()
        self._items = self._consume()

    def _work(self, chunks, put):
        with jax.enable_x64(self._x64):
            self._read(chunks, put)

    def _read(self, chunks, put):
        try:
            iterator = iter(chunks)
            while True:
                while not self._slots.acquire(timeout=0.05):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                chunk = next(iterator, _DONE)
                if chunk is _DONE:
                    break
                self._buffer.put(put(chunk))
                del chunk
            self._buffer.put(_DONE)
        except BaseException as error:  # re-raised in the consumer
            self._buffer.put(error)

    def _consume(self):
        while (item := self._buffer.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
            del item
            if not self._manual:
                self._slots.release()

    def release(self) -> None:
        """The consumer is done with one chunk: its slot may be read into."""
        self._slots.release()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._items)

    def close(self) -> None:
        """Stops the worker (an early stop or an error)."""
        self._stop.set()
        self._items.close()
        self._thread.join()


_DONE = object()


def prefetch(chunks: Iterator[Any], put: Callable[[Any], Any], depth: int = 2):
    """A :class:`Prefetcher` as a generator: each chunk is done when the next
    is asked for, and the worker stops when the generator is closed."""
    prefetcher = Prefetcher(chunks, put, depth)
    try:
        yield from prefetcher
    finally:
        prefetcher.close()
