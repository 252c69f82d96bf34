"""Out-of-core fitting: a memmap 16x the chunk budget, checkpoint and resume.

A linear model ``y = x @ w + b`` with 7 features is fitted to 2**20 rows that
live in ``.npy`` files on disk, opened as read-only ``np.memmap``s:
``jaxfit.fit`` reads them block by block, and ``chunk_bytes=`` caps the host
and device memory of its chunks (two alive at once) at a budget 16 times
smaller than the data. Three runs with the same data, chain and ``key``:

1. uninterrupted;
2. with ``checkpoint_path=`` (every ``--checkpoint-every`` chunks and at each
   epoch's end), "crashing" late in the last epoch: the ``callback`` raises,
   as a killed job would stop, so the chunks since the last checkpoint are
   lost;
3. ``resume_from=`` that checkpoint, to the end.

Prints both results and whether the resumed run's parameters and loss history
equal the uninterrupted run's bit for bit (the shuffle is a function of the
key and the epoch, so they do on CPU). Writes ``out_of_core.png`` (the loss
history of the three runs) next to this script (or to ``--out``). The data go
to a temporary directory, or to ``--dir``.

Run: ``python examples/out_of_core.py [--rows N] [--batch-size B]
[--budget-kib K] [--epochs E] [--dir DIR] [--out PATH]``
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxfit

FEATURES = 7
TRUE_W = np.linspace(-1.0, 1.0, FEATURES).astype(np.float32)
TRUE_B = 0.5
NOISE = 0.1


class SimulatedCrash(RuntimeError):
    """Raised by the callback to stop the fit as a crash would."""


def write_memmaps(directory: pathlib.Path, rows: int, seed: int = 0):
    """Writes ``x.npy`` (rows x FEATURES) and ``y.npy`` block by block."""
    x = np.lib.format.open_memmap(
        directory / "x.npy", mode="w+", dtype=np.float32, shape=(rows, FEATURES)
    )
    y = np.lib.format.open_memmap(
        directory / "y.npy", mode="w+", dtype=np.float32, shape=(rows,)
    )
    rng = np.random.default_rng(seed)
    block = 1 << 16
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        xb = rng.normal(size=(stop - start, FEATURES)).astype(np.float32)
        x[start:stop] = xb
        y[start:stop] = xb @ TRUE_W + TRUE_B + NOISE * rng.normal(size=stop - start)
    x.flush()
    y.flush()
    del x, y
    # Read-only memmaps: fit reads blocks of rows, never the whole file.
    return (
        np.load(directory / "x.npy", mmap_mode="r"),
        np.load(directory / "y.npy", mmap_mode="r"),
    )


def loss(params, batch, mask):
    x, y = batch
    return jaxfit.masked_mean((x @ params["w"] + params["b"] - y) ** 2, mask)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1 << 20)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--budget-kib", type=int, default=2048, help="chunk_bytes")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--dir", type=pathlib.Path, default=None)
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).with_name("out_of_core.png"),
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or pathlib.Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        run(args, directory)


def run(args, directory: pathlib.Path):
    data = write_memmaps(directory, args.rows)
    data_bytes = sum(a.nbytes for a in data)
    budget = args.budget_kib * 1024
    print(
        f"data: {args.rows} rows in {directory} as np.memmap, "
        f"{data_bytes / 2**20:.1f} MiB = {data_bytes / budget:.1f}x the "
        f"chunk budget (chunk_bytes={budget / 2**20:.2f} MiB)"
    )
    tx = jaxfit.chain(jaxfit.clip_by_global_norm(1.0), jaxfit.adam(0.01))
    params = {"w": jnp.zeros(FEATURES), "b": jnp.zeros(())}
    common = dict(
        batch_size=args.batch_size,
        epochs=args.epochs,
        key=0,
        chunk_bytes=budget,
        progress=False,
    )

    # 1. Uninterrupted. The callback only records the steps of each chunk.
    starts, ends = {}, {}  # (epoch, chunk) -> steps before it, after it
    steps = [0]

    def record(info):
        starts[info.epoch, info.chunk] = steps[0]
        steps[0] += len(info.metrics["loss"])
        ends[info.epoch, info.chunk] = steps[0]

    t0 = time.perf_counter()
    full = jaxfit.fit(loss, tx, params, data, callback=record, **common)
    seconds = time.perf_counter() - t0
    chunks = len(starts)
    print(
        f"uninterrupted: {len(full.history['loss'])} steps in {chunks} chunks "
        f"({chunks // args.epochs} per epoch) in {seconds:.2f} s, "
        f"{args.rows * args.epochs / seconds:,.0f} rows/s"
    )

    # 2. The same fit with checkpoints, crashing late in the last epoch at a
    #    chunk that is not a checkpoint: the chunks after the last one are lost.
    every = args.checkpoint_every
    crash_at = int(0.8 * chunks) // every * every + min(3, every - 1)
    crash_at = min(max(crash_at, 1), chunks - 1)
    checkpoint = directory / "fit-checkpoint.npz"
    seen, interrupted_losses = [], []

    def crash(info):
        seen.append((info.epoch, info.chunk))
        interrupted_losses.append(info.metrics["loss"])
        if len(seen) == crash_at:
            raise SimulatedCrash(f"crash in epoch {info.epoch}, chunk {info.chunk}")

    try:
        jaxfit.fit(
            loss,
            tx,
            params,
            data,
            callback=crash,
            checkpoint_path=str(checkpoint),
            checkpoint_every=args.checkpoint_every,
            **common,
        )
        raise AssertionError("the fit should have crashed")
    except SimulatedCrash as error:
        crash_step = ends[seen[-1]]
        print(f"interrupted: {error} (step {crash_step}); checkpoint: {checkpoint}")

    # 3. Resume from the last checkpoint to the end.
    resumed_at = []

    def first_chunk(info):
        if not resumed_at:
            resumed_at.append((info.epoch, info.chunk))

    resumed = jaxfit.fit(
        loss,
        tx,
        params,
        data,
        callback=first_chunk,
        resume_from=str(checkpoint),
        **common,
    )
    resume_step = starts[resumed_at[0]]
    print(
        f"resumed: from epoch {resumed_at[0][0]}, chunk {resumed_at[0][1]} "
        f"(step {resume_step}, {crash_step - resume_step} steps redone) to "
        f"step {len(resumed.history['loss'])}"
    )

    print(f"{'parameter':<10} {'true':>8} {'uninterrupted':>15} {'resumed':>15}")
    names = [f"w[{i}]" for i in range(FEATURES)] + ["b"]
    true = [*TRUE_W, TRUE_B]
    rows = zip(
        names,
        true,
        [*np.asarray(full.params["w"]), full.params["b"]],
        [*np.asarray(resumed.params["w"]), resumed.params["b"]],
        strict=True,
    )
    for name, t, a, b in rows:
        print(f"{name:<10} {t:8.4f} {float(a):15.7f} {float(b):15.7f}")
    same_params = all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(full.params), jax.tree.leaves(resumed.params), strict=True
        )
    )
    same_history = np.array_equal(full.history["loss"], resumed.history["loss"])
    print(
        "resumed == uninterrupted, bit for bit: "
        f"params {same_params}, loss history {same_history}"
    )
    print(f"final batch loss {full.history['loss'][-1]:.5f} (noise variance 0.01)")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('no plot: matplotlib is missing; pip install "jaxfit[examples]"')
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    history = full.history["loss"]
    interrupted = np.concatenate(interrupted_losses)
    after = np.arange(resume_step, len(history))
    left.semilogy(history, color="0.6", lw=3, label="uninterrupted")
    left.semilogy(after, resumed.history["loss"][resume_step:], "C1--", lw=1)
    left.set_title(f"jaxfit.fit over a {data_bytes / 2**20:.0f} MiB memmap")
    # Zoom in (linear scale) on the steps between the checkpoint and the crash.
    width = 3 * (crash_step - resume_step) + 20
    window = np.arange(
        max(resume_step - width, 0), min(crash_step + width, len(history))
    )
    right.plot(window, history[window], color="0.6", lw=3, label="uninterrupted")
    shown = window[window < len(interrupted)]
    right.plot(shown, interrupted[shown], "C0", lw=1, label="run with checkpoints")
    shown = window[window >= resume_step]
    right.plot(
        shown,
        resumed.history["loss"][shown],
        "C1--",
        lw=1.5,
        label="resumed from the checkpoint",
    )
    right.set_title("around the crash: the resumed run retraces the lost steps")
    for ax in (left, right):
        ax.axvline(crash_step, color="C3", lw=1, label="crash")
        ax.axvline(resume_step, color="C2", lw=1, ls=":", label="last checkpoint")
        ax.set(xlabel="step", ylabel="batch loss")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
