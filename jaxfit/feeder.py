"""The device feeder: host chunks in, device chunks out, read ahead.

The stage between the data sources (:mod:`jaxfit.data`) and the compiled
scan: it walks the epochs from a position (epoch, batch), moves each chunk
to the device (aligned for XLA:CPU, split over a mesh, per-batch flags
instead of row masks where the loss takes none), reads the next chunk on a
background thread while the current one runs, and keeps a chunk that is the
same every epoch on the device. ``fit`` and ``fit_least_squares`` loop over
its :class:`DeviceChunk` items.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxfit import data as _data


class DeviceChunk(NamedTuple):
    """One item of the feeder: a chunk on the device, or an epoch's end.

    Attributes:
      epoch: the epoch (from 0).
      index: the chunk's index within this pass over the epoch (None at the
        epoch's end).
      batches, masks: the chunk (None at the epoch's end); ``masks`` is
        ``[K, B]`` rows or ``[K]`` per-batch flags.
      steps: the chunk's real batches (the last chunk is filled with
        all-padding ones, which are no steps).
    """

    epoch: int
    index: int | None
    batches: Any
    masks: Any
    steps: int


class Feeder:
    """Device chunks of ``source`` for epochs ``start[0]`` to ``epochs - 1``.

    Args:
      source, batch_size, chunk_batches: what :func:`jaxfit.data.plan` gave.
      epochs: the last epoch is ``epochs - 1``.
      start: ``(epoch, batch)`` to start from (a resumed fit).
      rng_key: the raw key the shuffle derives from; None: no shuffle.
      window: batches per shuffle window (see ``ArraySource.chunks``).
      flags_only: send one flag per batch instead of a mask per row.
      sharding: where batches go (None: the default device).

    Iterating yields :class:`DeviceChunk` items. A chunk's memory is given
    back by :meth:`release` once the device is done with it (the consumer's
    work is asynchronous); an epoch's end needs no release. ``close`` stops
    the reader.
    """

    def __init__(
        self,
        source: Any,
        batch_size: int,
        chunk_batches: int,
        epochs: int,
        *,
        start: tuple[int, int] = (0, 0),
        rng_key: Any = None,
        window: int | None = None,
        flags_only: bool = False,
        sharding: Any = None,
    ):
        self.source = source
        self.batch_size, self.k = batch_size, chunk_batches
        self.epochs, self.start = epochs, start
        self.rng_key = None if rng_key is None else np.asarray(rng_key)
        self.window = window or chunk_batches
        self.flags_only, self.sharding = flags_only, sharding
        self.on_cpu = jax.devices()[0].platform == "cpu"
        # Rows read in order, one chunk per epoch without padding: every
        # epoch's chunk is the same, so it moves to the device once per fit.
        self.same_chunk = (
            self.rng_key is None
            and isinstance(source, _data.ArraySource)
            and source.num_rows == chunk_batches * batch_size
        )
        self._kept = None
        if self.same_chunk:  # nothing to read ahead: no thread
            self._prefetcher = None
            self._items = map(self._put, self._host_items())
        else:
            self._prefetcher = _data.Prefetcher(
                self._host_items(), self._put, manual=True
            )
            self._items = self._prefetcher

    def __iter__(self) -> Iterator[DeviceChunk]:
        for item in self._items:
            if item.batches is None and self._prefetcher is not None:
                self._prefetcher.release()  # an epoch's end holds no memory
            yield item

    def release(self) -> None:
        """The device is done with one chunk: the reader may use its memory."""
        if self._prefetcher is not None:
            self._prefetcher.release()

    def close(self) -> None:
        """Stops the reader and lets go of every chunk (the kept one too)."""
        if self._prefetcher is not None:
            self._prefetcher.close()
        self._items = self._kept = None

    def _host_items(self):
        """Host chunks of every epoch in one stream, so that the next epoch's
        first chunk is read while this epoch's last one runs."""
        first_epoch, first_batch = self.start
        for epoch in range(first_epoch, self.epochs):
            skip = first_batch if epoch == first_epoch else 0
            if self.same_chunk and self._kept is not None and skip == 0:
                yield DeviceChunk(epoch, 0, _KEPT, None, self.k)
            else:
                rng = None if self.rng_key is None else epoch_rng(self.rng_key, epoch)
                chunks = self.source.chunks(
                    self.batch_size, self.k, rng, window=self.window, start=skip
                )
                for index, (batches, masks) in enumerate(chunks):
                    steps = int(masks.any(axis=1).sum())
                    yield DeviceChunk(epoch, index, batches, masks, steps)
            yield DeviceChunk(epoch, None, None, None, 0)

    def _put(self, item: DeviceChunk) -> DeviceChunk:
        if item.batches is None:
            return item
        if item.batches is _KEPT:
            return item._replace(batches=self._kept[0], masks=self._kept[1])
        masks = item.masks.any(axis=1) if self.flags_only else item.masks
        batches, masks = self._to_device((item.batches, masks))
        # Only a whole epoch's chunk is kept: the first chunk of a fit
        # resumed mid-epoch holds just the epoch's remaining batches.
        if self.same_chunk and item.steps == self.k:
            self._kept = (batches, masks)
        return item._replace(batches=batches, masks=masks)

    def _to_device(self, chunk):
        if self.sharding is None:
            # may_alias: on CPU an aligned host chunk becomes the device
            # buffer without a copy; an unaligned one (a view of the user's
            # arrays, a memmap slice) is aligned by NumPy first, which is
            # faster than XLA's own copy.
            if self.on_cpu:
                chunk = jax.tree.map(_data.cpu_aligned, chunk)
            return jax.device_put(chunk, may_alias=True)
        if jax.process_count() > 1:
            # Several hosts: each passes its own rows; the global batch is
            # their concatenation along the batch axis.
            return jax.tree.map(
                lambda a: jax.make_array_from_process_local_data(self.sharding, a),
                chunk,
            )
        return jax.device_put(chunk, self.sharding)


# Stands for the chunk kept on the device (see `Feeder.same_chunk`).
_KEPT = object()


def epoch_rng(key: np.ndarray, epoch: int) -> np.random.Generator:
    """The host generator of an epoch's shuffle: a function of key and epoch."""
    return np.random.default_rng([int(k) for k in np.asarray(key)] + [epoch])
