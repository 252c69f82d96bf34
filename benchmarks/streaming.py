"""Streaming throughput: ``jaxfit.fit`` vs hand-written Optax loops and scans.

What is measured, side by side in one process, on ``2**21`` float32 points of
two models (a 3-parameter curve ``a * exp(-b x) + c`` and a small MLP,
8 -> 32 -> 1 with tanh), for batch sizes 256 ... 8192:

* ``jaxfit``: ``jaxfit.fit(loss, tx, params, (x, y), batch_size=B,
  epochs=E, shuffle=False, progress=False)`` from NumPy arrays in host memory
  (default ``chunk_bytes``), so each fit includes the host chunk assembly,
  the transfer to the device and the per-chunk metrics read-back;
* ``loop``: a hand-written Optax training loop: a Python ``for`` over the
  batches calling one jitted step (``value_and_grad``, ``tx.update``,
  ``apply_updates``; params and state donated). The data sit on the device,
  reshaped to ``[num_batches, B, ...]``, and the step picks batch ``i`` with a
  dynamic index inside the jitted function, so each step is a single
  dispatch (the fastest Python loop we know how to write);
* ``scan``: a hand-written Optax ``lax.scan``: the whole dataset reshaped to
  ``[num_batches, B, ...]`` on the device, one jitted, donated ``lax.scan``
  of the same step per epoch (the fairest competitor: no data movement at
  all during the fit);
* at the target batch size also ``scan from host`` (the same scan, moving
  the host arrays to the device in each timed call, as ``fit`` does) and,
  shuffled, ``jaxfit.fit(shuffle=True)`` against ``scan shuffled`` (a NumPy
  permutation of the rows and a transfer every epoch).

All three use the same loss, the same chain
``optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))``, the same
data in the same order and ``E`` epochs per timed call (optimizer init
included); their final params are checked to agree. Times are medians over
interleaved repeats after a warm-up (``_harness.interleaved``); the first
call of each (mostly compilation) is reported separately. Throughput is
samples per second (``E * 2**21`` rows per call); ratios are medians of
per-round ratios (higher is better for jaxfit).

Two streaming measurements complete it:

* memmap throughput: the same arrays as ``.npy`` memmaps in a temporary
  directory under ``/tmp``, at least 10x ``chunk_bytes``, vs the same arrays
  in memory with the same ``chunk_bytes`` (and vs the default budget). The
  files are written just before, so they are read from the page cache.
* memory: for 1 GiB and 8 GiB float32 memmaps (``x`` and ``y`` of the curve
  model), one fresh child process each streams one epoch with
  ``chunk_bytes=64 MiB`` and a large batch (once in order, once shuffled),
  sampling ``RssAnon`` from
  ``/proc/self/status`` in the ``callback`` after every chunk and on a 2 ms
  background thread; the table gives the peak minus the baseline taken after
  imports, and minus a second baseline after a warm-up fit on the first
  chunk's rows (compilation memory is part of the constant). The memmap
  pages themselves are file-backed (``RssFile``), not anonymous.

Targets (from the issues): jaxfit >= 30x the loop at batch 1024, >= 0.9x the
scan, >= 1x the scan from host arrays, shuffled >= 1x the shuffled scan;
memmap >= 0.8x in memory; peak RssAnon growth bounded by the chunk
budget plus a constant, the same for 1 and 8 GiB.

Run::

    python benchmarks/streaming.py [--quick]   # = run.py --only streaming

A full run takes about 4 minutes on 2 busy CPU cores (writing the 8 GiB
memmap and streaming it twice is about half of it). ``--quick`` is a CI-sized
smoke run (< 60 s: ``2**16`` points, batches 256 and 1024, 16 vs 64 MiB
memmaps) that writes ``streaming-<machine>-quick.json``/``.png`` instead.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxfit

MAX_NORM = 1.0
LEARNING_RATE = 1e-3
MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class Config:
    num_points: int
    batch_sizes: tuple[int, ...]
    epochs: int  # per timed call
    repeats: int
    target_batch: int  # where the loop/scan targets and memmap run are judged
    rss_sizes: tuple[int, ...]  # bytes of x + y per memory run
    rss_budgets: tuple[int, ...]  # chunk_bytes per memory run
    rss_batch: int
    rss_max_s: float  # the memory run stops (via the callback) after this
    ttr_points: int  # time to result: the quickstart's job, fresh processes
    ttr_batch: int
    ttr_epochs: int
    ttr_rounds: int


FULL = Config(
    num_points=2**21, batch_sizes=(256, 512, 1024, 2048, 4096, 8192), epochs=2,
    repeats=5, target_batch=1024, rss_sizes=(2 * GIB,),
    rss_budgets=(32 * MIB, 128 * MIB, 512 * MIB), rss_batch=2**16, rss_max_s=40.0,
    ttr_points=2**21, ttr_batch=4096, ttr_epochs=3, ttr_rounds=3,
)  # fmt: skip
QUICK = Config(
    num_points=2**16, batch_sizes=(256, 1024), epochs=2, repeats=3,
    target_batch=1024, rss_sizes=(64 * MIB,),
    rss_budgets=(2 * MIB, 4 * MIB, 8 * MIB), rss_batch=2**14, rss_max_s=10.0,
    ttr_points=2**16, ttr_batch=1024, ttr_epochs=3, ttr_rounds=2,
)  # fmt: skip
CONFIGS = {"full": FULL, "quick": QUICK, "smoke": QUICK}


# ----------------------------------------------------------------------------
# Models: loss(params, batch) -> scalar, the same function for all drivers.


def curve_loss(params, batch):
    x, y = batch
    a, b, c = params[0], params[1], params[2]
    return jnp.mean((a * jnp.exp(-b * x) + c - y) ** 2)


def mlp_loss(params, batch):
    x, y = batch
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    pred = hidden @ params["w2"] + params["b2"]
    return jnp.mean((pred[:, 0] - y) ** 2)


def curve_problem(n: int, rng: np.random.Generator):
    x = rng.uniform(0.0, 4.0, n).astype(np.float32)
    y = (2.5 * np.exp(-1.3 * x) + 0.5).astype(np.float32)
    y += rng.normal(0.0, 0.01, n).astype(np.float32)
    return jnp.array([1.0, 0.5, 0.0], jnp.float32), (x, y)


def mlp_problem(n: int, rng: np.random.Generator):
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), 2)
    params = {
        "w1": jax.random.normal(keys[0], (8, 32), jnp.float32) / np.sqrt(8),
        "b1": jnp.zeros(32, jnp.float32),
        "w2": jax.random.normal(keys[1], (32, 1), jnp.float32) / np.sqrt(32),
        "b2": jnp.zeros(1, jnp.float32),
    }
    return params, (x, y)


@dataclass(frozen=True)
class Model:
    label: str
    loss: Callable
    make: Callable


MODELS = {
    "curve": Model("3-param curve", curve_loss, curve_problem),
    "mlp": Model("MLP 8-32-1", mlp_loss, mlp_problem),
}

# One chain object per process: jaxfit caches its compiled runner per
# (loss, tx), as a user re-running ``fit`` with the same chain would get.
TX = optax.chain(optax.clip_by_global_norm(MAX_NORM), optax.adam(LEARNING_RATE))


# ----------------------------------------------------------------------------
# The hand-written competitors.


def make_loop(loss, tx, batch_size: int, data):
    """A Python loop of a jitted, donated step; batch ``i`` indexed in-jit."""
    n = len(data[0])
    num_batches = n // batch_size
    xs, ys = (
        jnp.asarray(a).reshape(num_batches, batch_size, *a.shape[1:]) for a in data
    )

    # The data are arguments, not closed-over constants (XLA would copy them
    # into the program).
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, xs, ys, i):
        batch = (
            jax.lax.dynamic_index_in_dim(xs, i, keepdims=False),
            jax.lax.dynamic_index_in_dim(ys, i, keepdims=False),
        )
        value, grad = jax.value_and_grad(loss)(params, batch)
        updates, opt_state = tx.update(grad, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    def run(params, epochs):
        params = jax.tree.map(jnp.copy, params)
        opt_state = tx.init(params)
        losses = []
        for _ in range(epochs):
            for i in range(num_batches):
                params, opt_state, value = step(params, opt_state, xs, ys, i)
                losses.append(value)
        return jax.block_until_ready((params, losses))

    return run


def _scan_epoch(loss, tx):
    """One jitted, donated ``lax.scan`` over an epoch's batches."""

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def epoch(params, opt_state, xs, ys):
        def body(carry, batch):
            params, opt_state = carry
            value, grad = jax.value_and_grad(loss)(params, batch)
            updates, opt_state = tx.update(grad, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), values = jax.lax.scan(body, (params, opt_state), (xs, ys))
        return params, opt_state, values

    return epoch


def _on_device(data, batch_size):
    n = len(data[0]) // batch_size
    return [jnp.asarray(a).reshape(n, batch_size, *a.shape[1:]) for a in data]


def make_scan(
    loss, tx, batch_size: int, data, shuffle: bool = False, from_host: bool = False
):
    """A jitted scan per epoch over device-resident data; with ``from_host``
    each call first moves the host arrays to the device (as ``fit`` does);
    with ``shuffle``, the rows are permuted on the host (NumPy) and moved
    again every epoch."""
    epoch = _scan_epoch(loss, tx)
    on_device = None if from_host else _on_device(data, batch_size)

    def run(params, epochs):
        params = jax.tree.map(jnp.copy, params)
        opt_state = tx.init(params)
        losses, rng = [], np.random.default_rng(0)
        batches = on_device or _on_device(data, batch_size)
        for _ in range(epochs):
            if shuffle:
                order = rng.permutation(len(data[0]))
                batches = _on_device([a[order] for a in data], batch_size)
            params, opt_state, values = epoch(params, opt_state, *batches)
            losses.append(values)
        return jax.block_until_ready((params, losses))

    return run


def make_jaxfit(loss, tx, batch_size: int, data, shuffle: bool = False, **kwargs):
    def run(params, epochs):
        result = jaxfit.fit(
            loss,
            tx,
            params,
            data,
            batch_size=batch_size,
            epochs=epochs,
            shuffle=shuffle,
            progress=False,
            **kwargs,
        )
        return jax.block_until_ready((result.params, result.history))

    return run


# ----------------------------------------------------------------------------
# Throughput.


def _timed_cases(runners: dict, params, epochs: int):
    """First call (compile) seconds, final params, and harness cases."""
    first_call_s, finals, cases = {}, {}, {}
    for name, run in runners.items():
        start = time.perf_counter()
        finals[name] = run(params, epochs)[0]
        first_call_s[name] = time.perf_counter() - start

        def case(number, run=run):
            for _ in range(number):
                run(params, epochs)

        cases[name] = case
    return first_call_s, finals, cases


def _max_diff(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _throughput_record(samples, rows, **fields) -> dict:
    times = {n: _harness.summarize(s) for n, s in samples.items()}
    return {
        **fields,
        "rows_per_call": rows,
        "times": times,
        "samples_per_s": {
            n: _harness.significant(rows / t["median_s"]) for n, t in times.items()
        },
    }


# At the target batch size, the steady-state pairs of time to result: each
# jaxfit driver against the scan that starts from the same host arrays.
HOST_PAIRS = {"scan from host": "jaxfit", "scan shuffled": "jaxfit shuffled"}


def time_drivers(model: Model, batch_size: int, problem, config: Config) -> dict:
    params, data = problem
    args = (model.loss, TX, batch_size, data)
    runners = {
        "jaxfit": make_jaxfit(*args),
        "loop": make_loop(*args),
        "scan": make_scan(*args),
    }
    pairs = {"loop": "jaxfit", "scan": "jaxfit"}
    if batch_size == config.target_batch:
        runners["scan from host"] = make_scan(*args, from_host=True)
        runners["jaxfit shuffled"] = make_jaxfit(*args, shuffle=True, key=0)
        runners["scan shuffled"] = make_scan(*args, shuffle=True)
        pairs.update(HOST_PAIRS)
    first_call_s, finals, cases = _timed_cases(runners, params, config.epochs)
    in_order = ("jaxfit", "loop", "scan", "scan from host")
    agreement = {
        n: _max_diff(finals[n], finals["scan"]) for n in in_order if n in finals
    }
    samples, _ = _harness.interleaved(cases, repeats=config.repeats, number=1)
    # jaxfit's speed-up is the competitor's time over jaxfit's: invert the ratio.
    return _throughput_record(
        samples,
        config.epochs * config.num_points,
        batch_size=batch_size,
        first_call_s=first_call_s,
        max_abs_diff_to_scan=agreement,
        speedup={
            other: _harness.paired_ratio(samples[other], samples[mine])
            for other, mine in pairs.items()
        },
        # The ceiling of any scan-based driver over the loop.
        scan_over_loop=_harness.paired_ratio(samples["loop"], samples["scan"]),
    )


def _write_memmaps(directory: Path, data) -> tuple:
    arrays = []
    for name, array in zip(("x", "y"), data, strict=True):
        path = directory / f"{name}.npy"
        out = np.lib.format.open_memmap(path, "w+", array.dtype, array.shape)
        out[:] = array
        out.flush()
        del out
        arrays.append(np.load(path, mmap_mode="r"))
    return tuple(arrays)


def time_memmap(model: Model, problem, config: Config, directory: Path) -> dict:
    params, data = problem
    data_bytes = sum(a.nbytes for a in data)
    chunk_bytes = data_bytes // 16  # the memmap is 16x the budget
    mapped = _write_memmaps(directory, data)
    batch = config.target_batch
    runners = {
        "memmap": make_jaxfit(model.loss, TX, batch, mapped, chunk_bytes=chunk_bytes),
        "in_memory": make_jaxfit(model.loss, TX, batch, data, chunk_bytes=chunk_bytes),
        "in_memory_default": make_jaxfit(model.loss, TX, batch, data),
    }
    first_call_s, finals, cases = _timed_cases(runners, params, config.epochs)
    agreement = {n: _max_diff(finals[n], finals["in_memory"]) for n in runners}
    samples, _ = _harness.interleaved(cases, repeats=config.repeats, number=1)
    return _throughput_record(
        samples,
        config.epochs * config.num_points,
        batch_size=batch,
        data_bytes=data_bytes,
        chunk_bytes=chunk_bytes,
        first_call_s=first_call_s,
        max_abs_diff_to_in_memory=agreement,
        ratio={
            other: _harness.paired_ratio(samples[other], samples["memmap"])
            for other in ("in_memory", "in_memory_default")
        },
    )


# ----------------------------------------------------------------------------
# Memory: one fresh child process per data size.


def _rss_anon() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def rss_child(
    directory: str, chunk_bytes: int, batch_size: int, max_s: float, shuffle: bool
):
    """Runs in the child: stream one epoch of the memmaps, report RssAnon."""
    x = np.load(os.path.join(directory, "x.npy"), mmap_mode="r")
    y = np.load(os.path.join(directory, "y.npy"), mmap_mode="r")
    params = jnp.array([1.0, 0.5, 0.0], jnp.float32)
    baseline_import = _rss_anon()
    # Warm-up on the first chunk's rows (same chunk shape, so the compiled
    # runner is reused): compilation memory is part of the constant, and the
    # second baseline separates it from what streaming adds.
    rows = chunk_bytes // (2 * batch_size * 8) * batch_size
    jaxfit.fit(
        curve_loss, TX, params, (x[:rows], y[:rows]), batch_size=batch_size,
        chunk_bytes=chunk_bytes, shuffle=shuffle, progress=False,
    )  # fmt: skip
    gc.collect()  # the warm-up's garbage is not the fit's memory
    baseline = _rss_anon()
    peak = {"callback": baseline, "thread": baseline}
    done = threading.Event()

    def sampler():
        while not done.wait(0.002):
            peak["thread"] = max(peak["thread"], _rss_anon())

    chunks = {"n": 0, "rows": 0}
    start = time.perf_counter()

    def callback(info):
        peak["callback"] = max(peak["callback"], _rss_anon())
        chunks["n"] += 1
        chunks["rows"] += info.metrics["loss"].shape[0] * batch_size
        return time.perf_counter() - start > max_s

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    result = jaxfit.fit(
        curve_loss,
        TX,
        params,
        (x, y),
        batch_size=batch_size,
        chunk_bytes=chunk_bytes,
        key=0,
        shuffle=shuffle,
        progress=False,
        callback=callback,
    )
    elapsed = time.perf_counter() - start
    done.set()
    thread.join()
    peak_all = max(peak.values())
    print(
        json.dumps(
            {
                "data_bytes": int(x.nbytes + y.nbytes),
                "chunk_bytes": chunk_bytes,
                "batch_size": batch_size,
                "shuffle": shuffle,
                "baseline_rss_anon_import": baseline_import,
                "baseline_rss_anon": baseline,
                "peak_rss_anon": peak_all,
                "peak_rss_anon_callback": peak["callback"],
                "growth_bytes": peak_all - baseline_import,
                "growth_after_warmup_bytes": peak_all - baseline,
                "chunks": chunks["n"],
                "rows_streamed": chunks["rows"],
                "stopped": result.stopped,
                "elapsed_s": elapsed,
                "samples_per_s": chunks["rows"] / elapsed,
            }
        )
    )


def _write_curve_memmaps(directory: Path, data_bytes: int) -> None:
    rows = data_bytes // 8  # float32 x and y
    x = np.lib.format.open_memmap(directory / "x.npy", "w+", np.float32, (rows,))
    y = np.lib.format.open_memmap(directory / "y.npy", "w+", np.float32, (rows,))
    rng = np.random.default_rng(0)
    block = 16 * MIB
    for start in range(0, rows, block):
        xb = rng.uniform(0.0, 4.0, min(block, rows - start)).astype(np.float32)
        x[start : start + len(xb)] = xb
        y[start : start + len(xb)] = 2.5 * np.exp(-1.3 * xb) + 0.5
    x.flush(), y.flush()
    del x, y


def _rss_run(directory, budget: int, shuffle: bool, config: Config) -> dict:
    record = _harness.run_child(
        __file__, "--rss-child", directory, budget, config.rss_batch,
        config.rss_max_s, int(shuffle),
    )  # fmt: skip
    print(
        f"  memory {record['data_bytes'] / GIB:.3g} GiB, budget "
        f"{budget / MIB:.0f} MiB, shuffle={shuffle}: growth after warm-up "
        f"{record['growth_after_warmup_bytes'] / MIB:.0f} MiB "
        f"({record['growth_after_warmup_bytes'] / budget:.2f}x the budget)",
        file=sys.stderr,
        flush=True,
    )
    return record


def measure_rss(config: Config, tmp_root: str) -> list[dict]:
    records = []
    free = shutil.disk_usage(tmp_root).free
    for size in config.rss_sizes:
        if size > 0.8 * free:
            print(f"  skipping {size / GIB:.2f} GiB: only {free / GIB:.1f} GiB free")
            continue
        directory = Path(tempfile.mkdtemp(prefix="jaxfit-rss-", dir=tmp_root))
        try:
            start = time.perf_counter()
            _write_curve_memmaps(directory, size)
            write_s = time.perf_counter() - start
            for budget in config.rss_budgets:
                for shuffle in (False, True):
                    record = _rss_run(directory, budget, shuffle, config)
                    record["write_s"] = write_s
                    records.append(record)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return records


# ----------------------------------------------------------------------------
# Time to result: one whole fit in a fresh process, compile included.

# Each jaxfit driver against the hand-written scan doing the same work: in
# order, or with a fresh host permutation of the rows every epoch.
TTR_PAIRS = (("jaxfit", "scan"), ("jaxfit shuffled", "scan shuffled"))


def ttr_child(model_key: str, driver: str, points: int, batch: int, epochs: int):
    """Runs in the child: one fit from host arrays, timed with its compile."""
    model = MODELS[model_key]
    params, data = model.make(points, np.random.default_rng(0))
    jax.block_until_ready(params)
    start = time.perf_counter()
    make = {
        "jaxfit": make_jaxfit,
        "jaxfit shuffled": functools.partial(make_jaxfit, shuffle=True, key=0),
        "scan": make_scan,
        "scan shuffled": functools.partial(make_scan, shuffle=True),
    }[driver]
    make(model.loss, TX, batch, data)(params, epochs)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def _ttr_once(model_key: str, driver: str, config: Config) -> float:
    return _harness.run_child(
        __file__, "--ttr-child", model_key, driver, config.ttr_points,
        config.ttr_batch, config.ttr_epochs,
    )["seconds"]  # fmt: skip


def time_to_result(config: Config) -> list[dict]:
    """Per model and pair, interleaved rounds of fresh-process fits."""
    records = []
    for key in MODELS:
        for measured, competitor in TTR_PAIRS:
            once = lambda driver, key=key: _ttr_once(key, driver, config)
            pair = _harness.fresh_process_pair(
                once, measured, competitor, config.ttr_rounds
            )
            records.append({"model": key, **pair})
            print(
                f"  time to result {key}, {measured} / {competitor}: "
                f"{pair['ratio']['median']:.3g}",
                file=sys.stderr,
                flush=True,
            )
    return records


def ttr_table(records: list[dict]) -> str:
    rows = [
        [
            r["model"],
            r["measured"],
            r["competitor"],
            _harness.format_seconds(r["measured_s"]["median"]),
            _harness.format_seconds(r["competitor_s"]["median"]),
            _harness.format_ratio(r["ratio"]),
        ]
        for r in records
    ]
    headers = ["model", "measured", "competitor", "measured", "competitor", "ratio"]
    return _harness.markdown_table(headers, rows)


# ----------------------------------------------------------------------------
# Report.


def _rate(value: float) -> str:
    return f"{value / 1e6:.2f} M/s"


def table(throughput: list[dict]) -> str:
    headers = [
        "model", "batch", "jaxfit", "loop", "scan",
        "jaxfit / loop", "jaxfit / scan", "compile jaxfit / scan",
        "jaxfit / scan from host", "shuffled: jaxfit / scan",
    ]  # fmt: skip
    rows = []
    for r in throughput:
        rate, speedup = r["samples_per_s"], r["speedup"]
        host = [
            _harness.format_ratio(speedup[k], ".2f") if k in speedup else "-"
            for k in HOST_PAIRS
        ]
        rows.append(
            [
                r["model"],
                r["batch_size"],
                _rate(rate["jaxfit"]),
                _rate(rate["loop"]),
                _rate(rate["scan"]),
                _harness.format_ratio(speedup["loop"], ".2f"),
                _harness.format_ratio(speedup["scan"], ".2f"),
                f"{r['first_call_s']['jaxfit']:.2f} / "
                f"{r['first_call_s']['scan']:.2f} s",
                *host,
            ]
        )
    return _harness.markdown_table(headers, rows)


def memmap_table(records: list[dict]) -> str:
    headers = [
        "model", "data / chunk_bytes", "memmap", "in memory (same budget)",
        "in memory (default)", "memmap / same", "memmap / default",
    ]  # fmt: skip
    rows = [
        [
            r["model"],
            f"{r['data_bytes'] / MIB:.0f} / {r['chunk_bytes'] / MIB:.1f} MiB",
            _rate(r["samples_per_s"]["memmap"]),
            _rate(r["samples_per_s"]["in_memory"]),
            _rate(r["samples_per_s"]["in_memory_default"]),
            _harness.format_ratio(r["ratio"]["in_memory"], ".2f"),
            _harness.format_ratio(r["ratio"]["in_memory_default"], ".2f"),
        ]
        for r in records
    ]
    return _harness.markdown_table(headers, rows)


def rss_table(records: list[dict]) -> str:
    headers = [
        "data", "shuffle", "chunk_bytes", "RssAnon after import", "after warm-up",
        "peak", "peak - import", "peak - warm-up", "rows streamed",
        "samples/s", "stopped",
    ]  # fmt: skip
    rows = [
        [
            f"{r['data_bytes'] / GIB:.3g} GiB",
            "yes" if r["shuffle"] else "no",
            f"{r['chunk_bytes'] / MIB:.0f} MiB",
            f"{r['baseline_rss_anon_import'] / MIB:.0f} MiB",
            f"{r['baseline_rss_anon'] / MIB:.0f} MiB",
            f"{r['peak_rss_anon'] / MIB:.0f} MiB",
            f"{r['growth_bytes'] / MIB:.0f} MiB",
            f"{r['growth_after_warmup_bytes'] / MIB:.1f} MiB",
            r["rows_streamed"],
            _rate(r["samples_per_s"]),
            r["stopped"],
        ]
        for r in records
    ]
    return _harness.markdown_table(headers, rows)


def plot(document: dict, path) -> Path:
    """Samples/s of the three drivers per batch size (top), and jaxfit's
    speed-up over the loop and the scan (bottom; red ticks: the targets at
    the target batch), one column per model."""
    throughput = document["throughput"]
    target_batch = document["config"]["target_batch"]
    plt = _harness.pyplot()
    fig, axes = plt.subplots(2, len(MODELS), figsize=(6.5 * len(MODELS), 8))
    for column, (key, model) in enumerate(MODELS.items()):
        chosen = [r for r in throughput if r["model"] == key]
        batches = [str(r["batch_size"]) for r in chosen]
        top, bottom = axes[0, column], axes[1, column]
        _harness.draw_bars(
            top,
            {
                name: [r["samples_per_s"][name] / 1e6 for r in chosen]
                for name in ("jaxfit", "loop", "scan")
            },
            batches,
        )
        top.set_title(f"{model.label}: throughput (higher is better)")
        top.set_ylabel("million samples / s")
        series = {"jaxfit / loop": "loop", "jaxfit / scan": "scan"}
        targets = {"loop": 30.0, "scan": 0.9}
        _harness.draw_bars(
            bottom,
            {s: [r["speedup"][o]["median"] for r in chosen] for s, o in series.items()},
            batches,
            errors={
                s: [(r["speedup"][o]["q1"], r["speedup"][o]["q3"]) for r in chosen]
                for s, o in series.items()
            },
            targets={
                s: [
                    targets[o] if r["batch_size"] == target_batch else None
                    for r in chosen
                ]
                for s, o in series.items()
            },
            lines={"same samples/s": 1.0},
            log=True,
        )
        bottom.set_title(f"{model.label}: jaxfit's speed-up (samples/s ratio)")
        bottom.set_ylabel("jaxfit / other")
        bottom.set_xlabel("batch size")
    num_points = document["config"]["num_points"]
    fig.suptitle(f"Streaming, {num_points} points (red ticks: targets)")
    return _harness.save_figure(fig, path)


def run_benchmark(config: Config) -> dict:
    rng = np.random.default_rng(0)
    throughput, memmap = [], []
    tmp_root = tempfile.gettempdir()
    for key, model in MODELS.items():
        problem = model.make(config.num_points, rng)
        for batch_size in config.batch_sizes:
            start = time.perf_counter()
            record = time_drivers(model, batch_size, problem, config)
            throughput.append({"model": key, **record})
            print(
                f"  {key} batch={batch_size}: {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        directory = Path(tempfile.mkdtemp(prefix="jaxfit-memmap-", dir=tmp_root))
        try:
            start = time.perf_counter()
            memmap.append(
                {"model": key, **time_memmap(model, problem, config, directory)}
            )
            print(
                f"  {key} memmap: {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    rss = measure_rss(config, tmp_root)
    ttr = time_to_result(config)
    return {"throughput": throughput, "memmap": memmap, "rss": rss, "ttr": ttr}


# ----------------------------------------------------------------------------
# Entry points for benchmarks/run.py.


def headline(document: dict) -> list[dict]:
    """The rows of benchmarks/run.py's combined table, with the issue's targets."""
    row = _harness.headline_row
    target_batch = document["config"]["target_batch"]
    rows = []
    for r in document["throughput"]:
        if r["batch_size"] != target_batch:
            continue
        for other, label, target in (
            ("loop", "Optax Python loop", 30.0),
            ("scan", "Optax lax.scan", 0.9),
            ("scan from host", "Optax lax.scan from host arrays", 1.0),
            ("scan shuffled", "Optax lax.scan, host shuffle", 1.0),
        ):
            if other not in r["speedup"]:
                continue
            shuffled = " shuffled" if "shuffle" in other else ""
            rows.append(
                row(
                    f"{r['model']}, batch {target_batch}",
                    label,
                    r["speedup"][other],
                    metric="samples/s",
                    better="higher",
                    target=target,
                    measured="jaxfit" + shuffled,
                )
            )
        if "scan_over_loop" in r:
            rows.append(
                row(
                    f"{r['model']}, batch {target_batch}: the ceiling",
                    "Optax Python loop",
                    r["scan_over_loop"],
                    metric="samples/s",
                    better="higher",
                    measured="Optax lax.scan",
                )
            )
    for r in document["memmap"]:
        rows.append(
            row(
                f"{r['model']} memmap at {r['data_bytes'] / r['chunk_bytes']:.0f}x "
                "chunk_bytes",
                "jaxfit in memory",
                r["ratio"]["in_memory"],
                metric="samples/s",
                better="higher",
                target=0.8,
                measured="jaxfit memmap",
            )
        )
    for r in document.get("ttr", []):
        rows.append(
            row(
                f"{r['model']}, {document['config']['ttr_points']} points, batch "
                f"{document['config']['ttr_batch']}: time to result",
                f"Optax {r['competitor']}",
                r["ratio"],
                metric="time",
                target=1.0,
                measured=r["measured"],
            )
        )
    for r in document["rss"]:
        rows.append(
            row(
                f"RssAnon growth streaming a {r['data_bytes'] / GIB:.3g} GiB memmap"
                f"{', shuffled' if r['shuffle'] else ''}",
                f"chunk_bytes {r['chunk_bytes'] / MIB:.0f} MiB",
                r["growth_after_warmup_bytes"] / r["chunk_bytes"],
                metric="bytes",
                target=1.25,
                measured="growth after warm-up",
            )
        )
    return rows


def benchmark(mode: str = "full") -> dict:
    """Entry point for ``benchmarks/run.py``: run, write JSON + PNG, return
    the headline rows ("smoke" is "quick")."""
    config = CONFIGS[mode]
    start = time.perf_counter()
    print(f"machine: {_harness.machine_slug()}", file=sys.stderr)
    results = run_benchmark(config)
    elapsed = time.perf_counter() - start

    print(table(results["throughput"]))
    print()
    print(memmap_table(results["memmap"]))
    print()
    print(rss_table(results["rss"]))
    print("\n## Time to result (fresh process, compile included)\n")
    print(ttr_table(results["ttr"]))
    json_path = _harness.results_path("streaming", "json", tag=_harness.tag_of(mode))
    png_path = json_path.with_suffix(".png")
    _harness.write_json(
        json_path,
        {
            "benchmark": "streaming",
            "description": "samples/s of jaxfit.fit vs a hand-written Optax "
            "Python loop of jitted steps and a hand-written lax.scan per epoch "
            "(chain(clip_by_global_norm(1.0), adam(1e-3))); speedups are "
            "medians of per-round time ratios (other / jaxfit, higher is "
            "better for jaxfit); memmap vs in-memory fit; peak RssAnon growth "
            "while streaming memmaps in a fresh process",
            "config": dataclasses.asdict(config) | {"mode": mode},
            "jaxfit_version": jaxfit.__version__,
            "elapsed_s": round(elapsed, 1),
            **results,
        },
    )
    plot(json.loads(json_path.read_text()), png_path)
    print(f"\nwrote {json_path} and {png_path.name} in {elapsed:.0f} s")
    return _harness.collect("streaming", mode, headline)


def main(argv=None) -> int:
    """``python benchmarks/streaming.py [--quick]``: see run.py (or, with
    ``--rss-child``, the child process of a memory measurement)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--ttr-child":
        model_key, driver, points, batch, epochs = argv[1:6]
        ttr_child(model_key, driver, int(points), int(batch), int(epochs))
        return 0
    if argv and argv[0] == "--rss-child":
        directory, chunk_bytes, batch, max_s, shuffle = argv[1:6]
        rss_child(
            directory, int(chunk_bytes), int(batch), float(max_s), bool(int(shuffle))
        )
        return 0
    return _harness.main("streaming", argv)


if __name__ == "__main__":
    sys.exit(main())
