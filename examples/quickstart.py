"""Quickstart: stream two million noisy points through a jaxfit chain.

The model ``y = amplitude * exp(-rate * x) + offset`` is fitted to 2**21
synthetic points with ``jaxfit.fit``: the data are cut into batches, each chunk
of batches runs as one compiled ``lax.scan``, and the next chunk is moved to
the device while the current one runs. Two chains are compared:

- ``clip_by_global_norm + adam``, the usual first choice;
- ``sgd(1.0) + scale_by_backtracking_linesearch``: gradient descent whose step
  size is found by a stochastic Armijo line search on each batch.

Prints the fitted against the true parameters and throughput, and writes
``quickstart.png`` (data, fits and loss curves) next to this script (or to
``--out``); the plot needs matplotlib (``pip install "jaxfit[examples]"``).

Run: ``python examples/quickstart.py [--points N] [--epochs E] [--batch-size B]
[--no-progress] [--out PATH]``
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax.numpy as jnp
import numpy as np
import optax

import jaxfit

TRUE = {"amplitude": 2.5, "rate": 1.3, "offset": 0.5}


def model(params, x):
    return params["amplitude"] * jnp.exp(-params["rate"] * x) + params["offset"]


def loss(params, batch, mask):
    """Mean squared residual over the real rows of a batch (``mask``)."""
    x, y = batch
    return jaxfit.masked_mean((model(params, x) - y) ** 2, mask)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2**21)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).with_name("quickstart.png"),
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 4.0, args.points).astype(np.float32)
    y = (
        TRUE["amplitude"] * np.exp(-TRUE["rate"] * x)
        + TRUE["offset"]
        + 0.05 * rng.normal(size=args.points)
    ).astype(np.float32)
    start = {
        name: jnp.asarray(v)
        for name, v in {"amplitude": 1.0, "rate": 0.5, "offset": 0.0}.items()
    }

    chains = {
        "clip + adam": jaxfit.chain(jaxfit.clip_by_global_norm(1.0), jaxfit.adam(0.02)),
        "sgd + line search": jaxfit.chain(
            optax.sgd(1.0), jaxfit.scale_by_backtracking_linesearch(15)
        ),
    }
    results = {}
    for name, tx in chains.items():
        t0 = time.perf_counter()
        result = jaxfit.fit(
            loss,
            tx,
            start,
            (x, y),
            batch_size=args.batch_size,
            epochs=args.epochs,
            key=0,
            progress=not args.no_progress,
        )
        seconds = time.perf_counter() - t0
        results[name] = result
        rate = args.points * args.epochs / seconds
        print(
            f"{name}: {args.epochs} epochs over {args.points} points in "
            f"{seconds:.2f} s ({rate:,.0f} samples/s, compile included)"
        )

    print(f"{'parameter':<10} {'true':>8}" + "".join(f" {n:>18}" for n in results))
    for param, true in TRUE.items():
        fitted = "".join(f" {float(r.params[param]):18.4f}" for r in results.values())
        print(f"{param:<10} {true:8.4f}{fitted}")
    for name, result in results.items():
        print(
            f"{name}: final batch loss {result.history['loss'][-1]:.5f} "
            f"(noise variance 0.0025), {int(result.state.skipped)} steps skipped"
        )

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('no plot: matplotlib is missing; pip install "jaxfit[examples]"')
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    shown = rng.choice(args.points, size=min(5000, args.points), replace=False)
    grid = np.linspace(0, 4, 200)
    left.plot(x[shown], y[shown], ".", ms=2, alpha=0.3, label="data (5000 shown)")
    left.plot(grid, model(TRUE, grid), "k--", label="truth")
    for name, result in results.items():
        left.plot(grid, model(result.params, grid), label=name)
        right.semilogy(result.history["loss"], label=name)
    left.set(xlabel="x", ylabel="y", title=f"Exponential decay, {args.points} points")
    left.legend()
    right.set(xlabel="step", ylabel="batch loss", title="jaxfit.fit")
    right.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
