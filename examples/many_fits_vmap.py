"""Thousands of independent curve fits at once with ``jax.vmap``.

``jaxfit.least_squares_solve`` is a whole Levenberg-Marquardt solve in one
``lax.while_loop``, so ``jax.vmap`` turns it into a solver for a batch of
datasets: here 2000 noisy exponential decays ``y = a exp(-k x) + c``, each
with its own true parameters, fitted in one compiled call (float64 inside a
scoped ``jax.enable_x64``). A vmapped loop runs until its slowest lane stops,
so the start of each fit is read off its data and ``max_nfev`` caps a lane
that would not converge. The same batch is then solved by
``jaxfit.least_squares_solve_many``, which runs the vmapped solver in rounds
and drops the fits that have stopped between rounds.

Prints the batch time after compilation, how many fits converged and the
median relative error of each parameter. If SciPy is installed, a loop of
``scipy.optimize.curve_fit`` over the first ``--scipy-fits`` datasets is timed
and its time per fit extrapolated to the whole batch (printed as such).
Writes ``many_fits_vmap.png`` (recovered against true parameters, error
histograms, a few fits) next to this script (or to ``--out``).

Run: ``python examples/many_fits_vmap.py [--fits N] [--points M]
[--scipy-fits K] [--out PATH]``
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxfit

NAMES = ("a", "k", "c")


def decay(x, a, k, c):
    return a * jnp.exp(-k * x) + c


def make_data(rng, fits, points, noise):
    x = np.linspace(0.0, 5.0, points)
    true = np.column_stack(
        [
            rng.uniform(0.5, 3.0, fits),  # a
            rng.uniform(0.3, 2.0, fits),  # k
            rng.uniform(-0.5, 0.5, fits),  # c
        ]
    )
    clean = true[:, :1] * np.exp(-true[:, 1:2] * x) + true[:, 2:]
    return x, clean + noise * rng.normal(size=clean.shape), true


def initial_guess(y):
    """A start per dataset from the data alone: the tail and the first point."""
    c0 = y[:, -10:].mean(axis=1)
    return np.column_stack([y[:, 0] - c0, np.ones(len(y)), c0])


def timed(fn, repeats=3):
    """``(first call's seconds, median of repeats, result)``."""
    t0 = time.perf_counter()
    result = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=2000)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--max-nfev", type=int, default=100)
    parser.add_argument(
        "--scipy-fits", type=int, default=200, help="0 skips the SciPy loop"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).with_name("many_fits_vmap.png"),
    )
    args = parser.parse_args()

    x, ys, true = make_data(
        np.random.default_rng(args.seed), args.fits, args.points, args.noise
    )
    p0 = initial_guess(ys)
    residual = jaxfit.model_residual(decay)

    @jax.jit
    @jax.vmap
    def solve(y, p0):
        batch = jaxfit.make_batch(jnp.asarray(x), y)
        return jaxfit.least_squares_solve(residual, p0, batch, max_nfev=args.max_nfev)

    with jax.enable_x64(True):
        ys_dev, p0_dev = jnp.asarray(ys), jnp.asarray(p0)
        first, batch_time, sol = timed(lambda: solve(ys_dev, p0_dev))
        # The same fits by least_squares_solve_many: every leaf carries the
        # axis of fits, and fits that have stopped drop out between rounds.
        xs = jnp.broadcast_to(jnp.asarray(x), ys.shape)
        batches = jax.vmap(jaxfit.make_batch)(xs, ys_dev)
        many_first, many_time, many = timed(
            lambda: jaxfit.least_squares_solve_many(
                residual, p0_dev, batches, max_nfev=args.max_nfev
            )
        )
    popt = np.asarray(sol.params)
    status = np.asarray(sol.status)
    iterations = np.asarray(sol.iterations)
    converged = status > 0
    rel = np.abs(popt - true) / np.abs(true)
    # c is drawn around 0: its error relative to the scale of the curve.
    rel[:, 2] = np.abs(popt[:, 2] - true[:, 2]) / true[:, 0]

    print(
        f"jax.vmap(least_squares_solve): {args.fits} fits of {args.points} "
        f"points in {batch_time * 1e3:.1f} ms after compilation "
        f"({batch_time / args.fits * 1e6:.1f} us per fit; first call with "
        f"compilation {first:.2f} s)"
    )
    print(
        f"converged: {int(converged.sum())} of {args.fits}; LM iterations: "
        f"median {np.median(iterations):.0f}, max {iterations.max()} "
        "(a vmapped loop runs until the slowest fit stops)"
    )
    print(
        "median relative error: "
        + ", ".join(f"{n} {np.median(rel[:, i]):.2e}" for i, n in enumerate(NAMES))
        + " (c relative to a)"
    )
    print(
        f"least_squares_solve_many: the same fits in {many_time * 1e3:.1f} ms "
        f"after compilation (first call {many_first:.2f} s; finished fits drop "
        f"out between rounds); {int((np.asarray(many.status) > 0).sum())} "
        "converged, max |difference| from the vmapped solve "
        f"{np.max(np.abs(np.asarray(many.params) - popt)):.1e}"
    )

    if args.scipy_fits > 0:
        try:
            import scipy.optimize
        except ImportError:
            print("no SciPy comparison: scipy is missing (pip install scipy)")
        else:
            count = min(args.scipy_fits, args.fits)
            decay_np = lambda x, a, k, c: a * np.exp(-k * x) + c
            scipy_popt = np.empty((count, 3))
            t0 = time.perf_counter()
            for i in range(count):
                scipy_popt[i], _ = scipy.optimize.curve_fit(decay_np, x, ys[i], p0[i])
            per_fit = (time.perf_counter() - t0) / count
            diff = np.max(np.abs(scipy_popt - popt[:count]))
            print(
                f"SciPy curve_fit loop: {count} fits in {per_fit * count:.2f} s "
                f"({per_fit * 1e6:.0f} us per fit); extrapolated to "
                f"{args.fits} fits: {per_fit * args.fits:.2f} s, "
                f"{per_fit * args.fits / batch_time:.1f}x the vmapped batch "
                f"(extrapolated, not measured); max |jaxfit - SciPy| on those "
                f"fits {diff:.1e}"
            )

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('no plot: matplotlib is missing; pip install "jaxfit[examples]"')
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    left, middle, right = axes
    for i, name in enumerate(NAMES):
        left.plot(true[:, i], popt[:, i], ".", ms=2, alpha=0.5, label=name)
    lims = [true.min(), true.max()]
    left.plot(lims, lims, "k-", lw=0.5)
    left.set(xlabel="true", ylabel="recovered", title=f"{args.fits} vmapped fits")
    left.legend(markerscale=5)
    signed = (popt - true) / np.column_stack([true[:, :2], true[:, 0]])
    bins = np.linspace(*np.percentile(signed, [0.5, 99.5]), 60)
    for i, name in enumerate(NAMES):
        middle.hist(signed[:, i], bins=bins, histtype="step", label=name)
    middle.set(
        xlabel="(recovered - true) / true   (c: / a)",
        ylabel="fits",
        title="relative error",
    )
    middle.legend()
    grid = np.linspace(x[0], x[-1], 200)
    for j, i in enumerate(np.linspace(0, args.fits - 1, 4).astype(int)):
        right.plot(x, ys[i], ".", ms=3, color=f"C{j}", alpha=0.5)
        right.plot(grid, decay(grid, *popt[i]), color=f"C{j}", label=f"fit {i}")
    right.set(xlabel="x", ylabel="y", title="a few of the fits")
    right.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
