"""One Levenberg-Marquardt step per Jacobian mode: is ``auto`` the fastest?

What is measured, in one process, in float64: one jitted
``scale_by_levenberg_marquardt(res, jacobian_mode=mode).update`` from a
fresh state, i.e. everything an LM iteration computes when it needs a new
Jacobian: the residuals, ``J^T J`` and ``J^T r`` (dense modes) or the
conjugate-gradient solve on ``v -> J^T J v`` (``matrix_free``), the damped
solve and the one trial residual evaluation. Modes: ``forward``, ``reverse``,
``matrix_free`` and ``auto`` (what :func:`jaxfit.jacobian_mode` picks).

Problems (``m`` residuals, ``n`` parameters):

* ``tall``: a sum of two damped oscillations, ``n = 6``, ``m`` large;
* ``wide``: ``r = A tanh(p) + 0.1 p_sum^2 - b`` with a dense random ``A``,
  ``n`` large and ``m = 20``;
* ``barely wide`` (``n = 1.5 m``) and ``3x wide``: the wide model near the
  switch from ``reverse`` to ``matrix_free`` (at ``n = 2 m``).

The cases are timed in interleaved rounds; the table gives median times and
the median per-round ratio of each mode to ``auto`` (> 1: slower than auto).
Results go to ``benchmarks/results/jacobian-<machine>[-quick].json``/``.png``.

    python benchmarks/jacobian.py [--quick]   # = run.py --only jacobian
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness

MODES = ("auto", "forward", "reverse", "matrix_free")
# (n, m) per problem. Reverse mode pulls back an m x m identity, so "tall"
# stays moderate.
FULL = {"tall": (6, 4000), "barely wide": (30, 20), "3x wide": (60, 20),
        "wide": (2000, 20)}  # fmt: skip
QUICK = FULL | {"tall": (6, 2000), "wide": (600, 20)}
CONFIGS = {
    "full": {"shapes": FULL, "repeats": 15},
    "quick": {"shapes": QUICK, "repeats": 5},
    "smoke": {"shapes": QUICK, "repeats": 5},
}


def tall_problem(m):
    import jax.numpy as jnp

    x = np.linspace(0, 10, m)
    true = np.array([2.0, 0.3, 1.5, 1.0, 0.1, 3.0])

    def model(p, x):
        return p[0] * jnp.exp(-p[1] * x) * jnp.cos(p[2] * x) + p[3] * jnp.exp(
            -p[4] * x
        ) * jnp.sin(p[5] * x)

    y = np.asarray(model(true, x)) + 0.01 * np.random.default_rng(0).normal(size=m)
    residual = lambda p, b: model(p, b[0]) - b[1]
    return residual, true * 1.1, (x, y)


def wide_problem(n, m):
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    a = rng.normal(size=(m, n)) / np.sqrt(n)
    b = rng.normal(size=m)

    def residual(p, batch):
        a, b = batch
        return a @ jnp.tanh(p) + 0.1 * jnp.sum(p) ** 2 / p.size - b

    return residual, 0.1 * rng.normal(size=n), (a, b)


def step_cases(residual, p0, batch):
    import jax
    import jax.numpy as jnp

    import jaxfit

    p0 = jnp.asarray(p0)
    batch = jax.tree.map(jnp.asarray, batch)
    cases, steps = {}, {}
    for mode in MODES:
        tx = jaxfit.scale_by_levenberg_marquardt(residual, jacobian_mode=mode)

        @jax.jit
        def step(p, batch, tx=tx):
            # A fresh state: the update computes a new Jacobian, as every
            # accepted LM iteration does.
            return tx.update(p, tx.init(p), p, batch=batch)[0]

        steps[mode] = step

        def case(number, step=step):
            for _ in range(number):
                out = step(p0, batch)
            jax.block_until_ready(out)

        cases[mode] = case
    # The dense modes compute the same step; matrix_free damps with D = I
    # (not Marquardt's diag(J^T J)), so its step differs by design.
    ref = steps["forward"](p0, batch)
    np.testing.assert_allclose(steps["reverse"](p0, batch), ref, rtol=1e-6, atol=1e-10)
    picked = steps[jaxfit.jacobian_mode(p0.size, batch[1].size)](p0, batch)
    np.testing.assert_allclose(steps["auto"](p0, batch), picked, rtol=1e-6, atol=1e-10)
    return cases


def _time_once(case):
    case(1)  # compile
    start = time.perf_counter()
    case(1)
    return time.perf_counter() - start


def run(problems, repeats):
    import jax

    import jaxfit

    rows = []
    with jax.enable_x64(True):
        for label, (residual, p0, batch), (n, m) in problems:
            cases = step_cases(residual, p0, batch)
            # Modes differ by up to 1000x here: size a repeat so that the
            # fastest lasts ~20 ms but the slowest no more than ~0.3 s.
            once = {k: _time_once(c) for k, c in cases.items()}
            number = max(
                1,
                min(int(0.02 / min(once.values())), int(0.3 / max(once.values()))),
            )
            samples, number = _harness.interleaved(
                cases, repeats=repeats, number=number
            )
            auto = jaxfit.jacobian_mode(n, m)
            row = {
                "problem": label,
                "n_params": n,
                "n_residuals": m,
                "auto_picks": auto,
                "number": number,
                "modes": {k: _harness.summarize(v) for k, v in samples.items()},
                "ratio_to_auto": {
                    k: _harness.paired_ratio(v, samples["auto"])
                    for k, v in samples.items()
                },
            }
            fastest = min(MODES[1:], key=lambda k: row["modes"][k]["median_s"])
            row["fastest"] = fastest
            rows.append(row)
    return rows


def table(rows) -> str:
    fmt = _harness.format_seconds
    return _harness.markdown_table(
        ["problem", "auto picks", *MODES, *(f"{k} / auto" for k in MODES[1:])],
        [
            [
                r["problem"],
                r["auto_picks"],
                *(fmt(r["modes"][k]["median_s"]) for k in MODES),
                *(f"{r['ratio_to_auto'][k]['median']:.2f}" for k in MODES[1:]),
            ]
            for r in rows
        ],
    )


def plot(document: dict, path) -> Path:
    """Each fixed mode's time of one LM step over auto's, per problem."""
    rows = document["rows"]
    panel = "median time of one LM step / auto's"
    return _harness.bar_chart(
        path,
        {
            panel: {
                k: [r["ratio_to_auto"][k]["median"] for r in rows] for k in MODES[1:]
            }
        },
        [r["problem"].split(" (")[0] for r in rows],
        errors={
            panel: {
                k: [
                    (r["ratio_to_auto"][k]["q1"], r["ratio_to_auto"][k]["q3"])
                    for r in rows
                ]
                for k in MODES[1:]
            }
        },
        ylabel="time / auto's (> 1: auto faster)",
        reference=1.0,
        reference_label="auto",
        ncols=1,
        title="jaxfit Jacobian modes, one LM step (float64)",
    )


# ----------------------------------------------------------------------------
# Entry points for benchmarks/run.py.


def headline(document: dict) -> list[dict]:
    """The rows of benchmarks/run.py's combined table: ``auto`` against the
    fastest fixed mode; met if auto picks it, or is within noise of it."""
    rows = []
    for r in document["rows"]:
        fastest = r["fastest"]
        ratio = r["ratio_to_auto"][fastest]
        rows.append(
            _harness.headline_row(
                r["problem"],
                f"fastest fixed mode ({fastest})",
                _harness.inverse_ratio(ratio),
                metric="time of one LM step",
                target_text="picks the fastest, or <= 1.05",
                met=fastest == r["auto_picks"] or ratio["median"] >= 0.95,
                measured=f"auto ({r['auto_picks']})",
            )
        )
    return rows


def benchmark(mode: str = "full") -> dict:
    """Entry point for ``benchmarks/run.py``: run, write JSON + PNG, return
    the headline rows ("smoke" is "quick")."""
    config = CONFIGS[mode]
    problems = []
    for label, (n, m) in config["shapes"].items():
        made = tall_problem(m) if label == "tall" else wide_problem(n, m)
        problems.append((f"{label} (n={n}, m={m})", made, (n, m)))
    rows = run(problems, config["repeats"])
    print(table(rows))
    json_path = _harness.results_path("jacobian", "json", tag=_harness.tag_of(mode))
    _harness.write_json(json_path, {"rows": rows, "mode": mode})
    plot(json.loads(json_path.read_text()), json_path.with_suffix(".png"))
    print(f"wrote {json_path}")
    return _harness.collect("jacobian", mode, headline)


def main(argv=None) -> int:
    """``python benchmarks/jacobian.py [--quick]``: see run.py."""
    return _harness.main("jacobian", argv)


if __name__ == "__main__":
    sys.exit(main())
