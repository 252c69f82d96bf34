"""jaxfit.curve_fit vs scipy.optimize.curve_fit (lm, trf), side by side.

Per size and model: the first call (compilation included; each size is a new
padding bucket, so it compiles) and the median repeat call, plus a batch of
independent 100-point fits (jaxfit vmapped vs a SciPy loop) and the peak
memory of one fit at the largest size (each in a fresh subprocess, maxrss).

    python benchmarks/curve_fit.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness

MODELS = {
    # 3 parameters: decaying exponential with offset.
    "3p": ([2.5, 1.3, 0.5], [1.0, 1.0, 0.0]),
    # 8 parameters: two Gaussian peaks on a linear background.
    "8p": (
        [3.0, 2.0, 0.5, 2.0, 6.0, 0.8, 0.3, 0.05],
        [2.5, 2.2, 0.6, 1.5, 5.8, 1.0, 0.2, 0.0],
    ),
}


def model(xp, name):
    if name == "3p":
        return lambda x, a, k, c: a * xp.exp(-k * x) + c

    def two_peaks(x, a1, m1, s1, a2, m2, s2, c0, c1):
        g1 = a1 * xp.exp(-0.5 * ((x - m1) / s1) ** 2)
        g2 = a2 * xp.exp(-0.5 * ((x - m2) / s2) ** 2)
        return g1 + g2 + c0 + c1 * x

    return two_peaks


def data(name, m, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 8, m)
    true, _ = MODELS[name]
    return x, model(np, name)(x, *true) + 0.05 * rng.normal(size=m)


def _timed(fn, repeats):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)) if times else first, out


def one_size(name, m, repeats):
    import jax.numpy as jnp
    import scipy.optimize as so

    import jaxfit

    x, y = data(name, m)
    _, p0 = MODELS[name]
    fj, fn = model(jnp, name), model(np, name)
    row = {"model": name, "m": m}
    first, rep, popt = _timed(lambda: jaxfit.curve_fit(fj, x, y, p0=p0)[0], repeats)
    row["jaxfit_first"], row["jaxfit_repeat"] = first, rep
    for method in ("lm", "trf"):
        first, rep, ref = _timed(
            lambda method=method: so.curve_fit(fn, x, y, p0=p0, method=method)[0],
            repeats,
        )
        row[f"scipy_{method}"] = rep
        row[f"max_rel_diff_{method}"] = float(np.max(np.abs(popt - ref) / np.abs(ref)))
    return row


def batch(n_fits, repeats):
    import jax
    import jax.numpy as jnp
    import scipy.optimize as so

    import jaxfit

    rng = np.random.default_rng(1)
    x = np.linspace(0, 5, 100)
    f = model(jnp, "3p")
    true = np.stack(
        [
            rng.uniform(1, 4, n_fits),
            rng.uniform(0.3, 2, n_fits),
            rng.normal(size=n_fits),
        ],
        1,
    )
    ys = (
        true[:, :1] * np.exp(-true[:, 1:2] * x)
        + true[:, 2:]
        + 0.01 * rng.normal(size=(n_fits, 100))
    )
    residual = jaxfit.model_residual(f)

    @jax.jit
    @jax.vmap
    def solve(y):
        return jaxfit.least_squares_solve(
            residual, jnp.ones(3), jaxfit.make_batch(x, y)
        ).params

    def run_jax():
        with jax.enable_x64(True):
            return np.asarray(solve(ys))

    first, jax_time, params = _timed(run_jax, repeats)
    fn = model(np, "3p")
    n_scipy = min(n_fits, 500)  # extrapolated per fit: a full loop takes minutes
    t0 = time.perf_counter()
    ref, failures = [], 0
    for i in range(n_scipy):
        try:
            ref.append(so.curve_fit(fn, x, ys[i], p0=[1, 1, 1])[0])
        except RuntimeError:  # SciPy did not converge within maxfev
            ref.append(np.full(3, np.nan))
            failures += 1
    ref = np.stack(ref)
    scipy_time = (time.perf_counter() - t0) / n_scipy * n_fits
    diff = float(np.nanmax(np.abs(params[:n_scipy] - ref)))
    return {
        "n_fits": n_fits,
        "jaxfit_first": first,
        "jaxfit_repeat": jax_time,
        "scipy_loop": scipy_time,
        "scipy_fits_timed": n_scipy,
        "speedup": scipy_time / jax_time,
        "max_abs_diff": diff,
        "scipy_failures": failures,
    }


def peak_memory(which, name, m):
    code = f"""
import resource, sys, numpy as np
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import curve_fit as b
x, y = b.data({name!r}, {m})
p0 = b.MODELS[{name!r}][1]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if {which!r} == 'jaxfit':
    import jax.numpy as jnp, jaxfit
    jaxfit.curve_fit(b.model(jnp, {name!r}), x, y, p0=p0)
else:
    import scipy.optimize as so
    so.curve_fit(b.model(np, {name!r}), x, y, p0=p0, method={which!r})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [10**3, 10**5, 10**6] if args.quick else [10**3, 10**5, 10**6, 10**7]
    repeats = 2 if args.quick else 3
    n_fits = 1000 if args.quick else 10_000
    rows = [one_size(name, m, repeats) for name in MODELS for m in sizes]
    ms = _harness.format_seconds
    print(
        _harness.markdown_table(
            [
                "model",
                "points",
                "jaxfit first",
                "jaxfit repeat",
                "scipy lm",
                "scipy trf",
                "repeat / lm",
                "first / lm",
                "max rel diff (lm)",
            ],
            [
                [
                    r["model"],
                    f"{r['m']:.0e}",
                    ms(r["jaxfit_first"]),
                    ms(r["jaxfit_repeat"]),
                    ms(r["scipy_lm"]),
                    ms(r["scipy_trf"]),
                    f"{r['jaxfit_repeat'] / r['scipy_lm']:.2f}",
                    f"{r['jaxfit_first'] / r['scipy_lm']:.2f}",
                    f"{r['max_rel_diff_lm']:.1e}",
                ]
                for r in rows
            ],
        )
    )
    b = batch(n_fits, repeats)
    print(
        f"\nbatch of {b['n_fits']} 100-point fits: "
        f"jaxfit vmapped {ms(b['jaxfit_repeat'])}"
        f" (first {ms(b['jaxfit_first'])}), SciPy loop {ms(b['scipy_loop'])}"
        f" (from {b['scipy_fits_timed']} fits): {b['speedup']:.0f}x;"
        f" max |diff| {b['max_abs_diff']:.1e}; SciPy failures {b['scipy_failures']}"
    )
    big = sizes[-1]
    memory = {w: peak_memory(w, "8p", big) for w in ("jaxfit", "lm", "trf")}
    print(f"\npeak RSS, 8p model at {big:.0e} points (MiB): {json.dumps(memory)}")
    tag = "quick" if args.quick else ""
    _harness.write_json(
        _harness.results_path("curve_fit", "json", tag=tag),
        {"sizes": rows, "batch": b, "peak_rss_mib": memory, "quick": args.quick},
    )
    categories = [f"{r['m']:.0e}" for r in rows if r["model"] == "3p"]
    panels = {
        f"{name} model": {
            "jaxfit repeat / scipy lm": [
                r["jaxfit_repeat"] / r["scipy_lm"] for r in rows if r["model"] == name
            ],
            "jaxfit first / scipy lm": [
                r["jaxfit_first"] / r["scipy_lm"] for r in rows if r["model"] == name
            ],
        }
        for name in MODELS
    }
    _harness.bar_chart(
        _harness.results_path("curve_fit", "png", tag=tag),
        panels,
        categories,
        ylabel="time ratio (lower is better)",
        xlabel="points",
        reference=1.0,
        title="jaxfit.curve_fit vs scipy.optimize.curve_fit(method='lm')",
    )


if __name__ == "__main__":
    main()
