"""Line searches: evaluations and time to a gradient tolerance.

jaxfit vs Optax vs ``scipy.optimize.minimize``, on the same problems, in
float64 (a scoped ``jax.enable_x64``), from the same starting points:

* ``lbfgs``: ``jaxfit.lbfgs()`` vs ``optax.lbfgs()`` (both: Optax's L-BFGS
  direction, memory 10, zoom line search with 20 trials, first trial 1);
* ``sgd+backtracking``: ``chain(sgd(1), scale_by_backtracking_linesearch(30,
  store_grad=True))`` from each library;
* ``sgd+zoom``: ``chain(sgd(1), scale_by_zoom_linesearch(30))`` from each;
* ``scipy L-BFGS-B``: ``scipy.optimize.minimize(method="L-BFGS-B",
  jac=True)`` on a jitted ``value_and_grad`` (memory 10, ``ftol=0`` so that
  it stops on the gradient tolerance like the others).

Every JAX solver is one jitted ``lax.while_loop`` that steps until the
gradient's infinity norm is <= ``gtol`` (or a step cap), using each library's
``value_and_grad_from_state`` so the line search's last evaluation is reused.
Optax's line-search state changes dtype after the first update, which a
``while_loop`` carry does not allow, so the Optax solvers take their first
step before the loop (jaxfit's do not need to).

Evaluations are calls of the objective (value, or value and gradient: the
zoom search and SciPy evaluate both, the backtracking search only the value
plus one backward pass for the accepted trial), counted from the line
searches' own counters (``info.num_evaluations`` / Optax's
``info.num_linesearch_steps``) plus the first evaluation; SciPy's is
``nfev``. Times are medians over interleaved repeats of a whole solve after a
warm-up call (compilation excluded; the first call's time is reported
separately).

Gradient descent with a line search is chaotic on these problems: jaxfit's
and Optax's zoom searches take the same decisions on the same inputs, but
last-bit differences (XLA's fusion or FMA choices, a 1-ulp change of the
start) grow until the two paths part, after which the counts differ by up to
about 15% either way, as Optax's own counts from starts 1 ulp apart do
(Rosenbrock-100: 23788, 24673, 24001). So the ``sgd+*`` families are also
solved from several starts (``CONFIGS``: the given one and seeded random relative
perturbations of 5%) and compared by the median over starts of the paired
ratio of evaluations, jaxfit / Optax; L-BFGS takes the same steps in both
(37 of 40 starts equal in a 10-start check per problem, the other 3 fewer
for jaxfit), so one start shows it.

Problems: the chained Rosenbrock function in 100 dimensions (start
``[-1.2, 1, ...]``) and least-squares problems ``0.5 * |r(x)|^2``:
Kowalik-Osborne and Osborne 1 (More, Garbow & Hillstrom, 1981), and a linear
least-squares fit (200 x 50, condition number 1e3).

Run::

    python benchmarks/linesearch.py [--quick]   # = run.py --only linesearch

``--quick`` (< 30 s) runs Rosenbrock-100 and Kowalik-Osborne with fewer
repeats, starts and a lower step cap for gradient descent, writing
``linesearch-<machine>-quick.json``/``.png``; the full run writes
``linesearch-<machine>.json``/``.png`` in ``benchmarks/results/``. The JSON
keeps, per solver and problem, the median and quartiles of its times and of
its evaluations over the starts, not every sample.
"""

from __future__ import annotations

import json
import sys
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
import scipy.optimize

import jaxfit

# ---------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------


def rosenbrock(x):
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


# fmt: off
_KO_Y = np.array([
    0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627,
    0.0456, 0.0342, 0.0323, 0.0235, 0.0246,
])
# fmt: on
_KO_U = np.array([4, 2, 1, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])


def kowalik_osborne(x):
    u = _KO_U
    r = _KO_Y - x[0] * (u**2 + u * x[1]) / (u**2 + u * x[2] + x[3])
    return 0.5 * jnp.sum(r**2)


# fmt: off
_OS1_Y = np.array([
    0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751,
    0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506,
    0.490, 0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414,
    0.411, 0.406,
])
# fmt: on
_OS1_T = 10.0 * np.arange(33)


def osborne1(x):
    t = _OS1_T
    model = x[0] + x[1] * jnp.exp(-t * x[3]) + x[2] * jnp.exp(-t * x[4])
    return 0.5 * jnp.sum((_OS1_Y - model) ** 2)


def _linear_problem(rows=200, cols=50, condition=1e3, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(rows, cols)))
    v, _ = np.linalg.qr(rng.normal(size=(cols, cols)))
    singular = np.geomspace(1.0, 1.0 / condition, cols)
    matrix = (u * singular) @ v.T
    target = matrix @ rng.normal(size=cols) + 0.01 * rng.normal(size=rows)
    return matrix, target


_LIN_A, _LIN_B = _linear_problem()


def linear_lsq(x):
    return 0.5 * jnp.sum((_LIN_A @ x - _LIN_B) ** 2)


@dataclass(frozen=True)
class Problem:
    fn: Callable
    x0: np.ndarray
    gtol: float


PROBLEMS = {
    "rosenbrock-100": Problem(rosenbrock, np.tile([-1.2, 1.0], 50), 1e-5),
    "kowalik-osborne": Problem(
        kowalik_osborne, np.array([0.25, 0.39, 0.415, 0.39]), 1e-8
    ),
    "osborne1": Problem(osborne1, np.array([0.5, 1.5, -1.0, 0.01, 0.02]), 1e-8),
    "linear-lsq-200x50": Problem(linear_lsq, np.zeros(50), 1e-8),
}
QUICK_PROBLEMS = ("rosenbrock-100", "kowalik-osborne")

# ---------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    family: str  # what is compared side by side
    library: str
    make_tx: Callable[[], optax.GradientTransformation]
    gradient_descent: bool  # gets the (lower) gradient-descent step cap


def _jaxfit_evals(state):
    return optax.tree.get(state, "num_evaluations")


def _optax_evals(state):
    return optax.tree.get(state, "num_linesearch_steps")


METHODS = {
    "jaxfit lbfgs": Method("lbfgs", "jaxfit", jaxfit.lbfgs, False),
    "optax lbfgs": Method("lbfgs", "optax", optax.lbfgs, False),
    "jaxfit sgd+backtracking": Method(
        "sgd+backtracking",
        "jaxfit",
        lambda: jaxfit.chain(
            optax.sgd(1.0),
            jaxfit.scale_by_backtracking_linesearch(30, store_grad=True),
        ),
        True,
    ),
    "optax sgd+backtracking": Method(
        "sgd+backtracking",
        "optax",
        lambda: optax.chain(
            optax.sgd(1.0),
            optax.scale_by_backtracking_linesearch(30, store_grad=True),
        ),
        True,
    ),
    "jaxfit sgd+zoom": Method(
        "sgd+zoom",
        "jaxfit",
        lambda: jaxfit.chain(optax.sgd(1.0), jaxfit.scale_by_zoom_linesearch(30)),
        True,
    ),
    "optax sgd+zoom": Method(
        "sgd+zoom",
        "optax",
        lambda: optax.chain(optax.sgd(1.0), optax.scale_by_zoom_linesearch(30)),
        True,
    ),
}
SCIPY = "scipy L-BFGS-B"
# Families whose trajectories are chaotic, compared over several starts.
MULTI_START_FAMILIES = ("sgd+backtracking", "sgd+zoom")
START_SCALE = 0.05  # relative perturbation of the extra starts


def perturbed_starts(x0, count, scale=START_SCALE, seed=0):
    """``x0`` and ``count - 1`` seeded random perturbations of it.

    Each coordinate moves by ``scale`` times its size (times a standard
    normal draw), or by ``scale`` where it is 0.
    """
    rng = np.random.default_rng(seed)
    size = np.where(x0 == 0, 1.0, np.abs(x0))
    return [x0] + [
        x0 + scale * size * rng.normal(size=x0.shape) for _ in range(count - 1)
    ]


def make_jax_solver(method: Method, problem: Problem, max_steps: int):
    """A jitted ``x0 -> (x, value, grad_norm, steps, evaluations)``."""
    fn, gtol = problem.fn, problem.gtol
    tx = method.make_tx()
    if method.library == "jaxfit":
        value_and_grad = jaxfit.value_and_grad_from_state(fn)
        evals_of = _jaxfit_evals
    else:
        value_and_grad = optax.value_and_grad_from_state(fn)
        evals_of = _optax_evals

    def step(carry):
        x, state, value, grad, steps, evals = carry
        updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=fn)
        x = optax.apply_updates(x, updates)
        evals = evals + evals_of(state).astype(jnp.int32)
        # value_and_grad_from_state evaluates only when the stored value is
        # not finite (never after a successful search); count it if it does.
        stored = optax.tree.get(state, "value")
        evals = evals + (~jnp.isfinite(stored)).astype(jnp.int32)
        value, grad = value_and_grad(x, state=state)
        return x, state, value, grad, steps + 1, evals

    def not_done(carry):
        *_, grad, steps, _ = carry
        return (jnp.max(jnp.abs(grad)) > gtol) & (steps < max_steps)

    @jax.jit
    def solve(x0):
        state = tx.init(x0)
        value, grad = value_and_grad(x0, state=state)
        carry = (x0, state, value, grad, jnp.int32(0), jnp.int32(1))
        if method.library == "optax":
            # Optax's state changes dtype after one update, and a while_loop
            # carry may not: take the first step outside the loop.
            carry = step(carry)
        x, state, value, grad, steps, evals = jax.lax.while_loop(not_done, step, carry)
        return x, value, jnp.max(jnp.abs(grad)), steps, evals

    return solve


def make_scipy_solver(problem: Problem, max_steps: int):
    value_and_grad = jax.jit(jax.value_and_grad(problem.fn))

    def fun(x):
        value, grad = value_and_grad(x)
        return float(value), np.asarray(grad, np.float64)

    def solve(x0):
        result = scipy.optimize.minimize(
            fun,
            x0,
            jac=True,
            method="L-BFGS-B",
            options={
                "maxcor": 10,
                "ftol": 0.0,
                "gtol": problem.gtol,
                "maxiter": max_steps,
            },
        )
        return result

    fun(problem.x0)  # compile value_and_grad
    return solve


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def run(problem_names, *, repeats, target_s, lbfgs_cap, gd_cap, starts):
    rows = []
    for problem_name in problem_names:
        problem = PROBLEMS[problem_name]
        x0 = jnp.asarray(problem.x0, jnp.float64)
        cases, results, first_call = {}, {}, {}
        for name, method in METHODS.items():
            cap = gd_cap if method.gradient_descent else lbfgs_cap
            solve = make_jax_solver(method, problem, cap)
            start = time.perf_counter()
            out = jax.block_until_ready(solve(x0))
            first_call[name] = time.perf_counter() - start
            _, value, gnorm, steps, evals = (np.asarray(v) for v in out)
            results[name] = {
                "library": method.library,
                "family": method.family,
                "value": float(value),
                "grad_inf_norm": float(gnorm),
                "reached": bool(gnorm <= problem.gtol),
                "steps": int(steps),
                "evaluations": int(evals),
                "step_cap": cap,
            }
            if method.family in MULTI_START_FAMILIES:
                # (grad norm, steps, evaluations) per start, the given one first
                per_start = [(gnorm, steps, evals)] + [
                    tuple(np.asarray(v) for v in solve(jnp.asarray(x))[2:])
                    for x in perturbed_starts(np.asarray(problem.x0), starts)[1:]
                ]
                results[name]["starts"] = {
                    "evaluations": [int(e) for *_, e in per_start],
                    "steps": [int(s) for _, s, _ in per_start],
                    "reached": [bool(g <= problem.gtol) for g, *_ in per_start],
                }
            cases[name] = lambda n, solve=solve, x0=x0: [
                jax.block_until_ready(solve(x0)) for _ in range(n)
            ]
        scipy_solve = make_scipy_solver(problem, lbfgs_cap)
        start = time.perf_counter()
        result = scipy_solve(np.asarray(problem.x0))
        first_call[SCIPY] = time.perf_counter() - start
        gnorm = float(np.max(np.abs(jax.grad(problem.fn)(jnp.asarray(result.x)))))
        results[SCIPY] = {
            "library": "scipy",
            "family": "lbfgs",
            "value": float(result.fun),
            "grad_inf_norm": gnorm,
            "reached": bool(gnorm <= problem.gtol),
            "steps": int(result.nit),
            "evaluations": int(result.nfev),
            "step_cap": lbfgs_cap,
            "message": str(result.message),
        }
        x0_numpy = np.asarray(problem.x0)
        cases[SCIPY] = lambda n, solve=scipy_solve, x0=x0_numpy: [
            solve(x0) for _ in range(n)
        ]
        samples = _harness.interleaved_per_case(
            cases, repeats=repeats, target_s=target_s
        )
        for name, result in results.items():
            result["time"] = _harness.summarize(samples[name])
            result["first_call_s"] = first_call[name]
            rows.append({"problem": problem_name, "method": name, **result})
        print(f"  {problem_name}: done", file=sys.stderr)
    return rows


def _reached(row):
    if row["reached"]:
        return "yes"
    if row["steps"] >= row["step_cap"]:
        return f"no (cap {row['step_cap']})"
    return "no (stopped)"  # SciPy gave up before the tolerance


def table(rows):
    headers = [
        "problem",
        "method",
        "reached",
        "steps",
        "evaluations",
        "final f",
        "time (median)",
        "first call",
    ]
    body = [
        [
            row["problem"],
            row["method"],
            _reached(row),
            row["steps"],
            row["evaluations"],
            f"{row['value']:.3e}",
            _harness.format_seconds(row["time"]["median_s"]),
            _harness.format_seconds(row["first_call_s"]),
        ]
        for row in rows
    ]
    return _harness.markdown_table(headers, body)


def _over_starts(ours, theirs):
    """Evaluations over the starts: medians and paired ratios jaxfit / Optax
    (median, quartiles and range of the per-start ratios)."""
    a = np.array(ours["evaluations"], float)
    b = np.array(theirs["evaluations"], float)
    ratios = _harness.spread([float(r) for r in a / b])
    return {
        "starts": len(a),
        "reached_jaxfit": sum(ours["reached"]),
        "reached_optax": sum(theirs["reached"]),
        "evaluations_median_jaxfit": float(np.median(a)),
        "evaluations_median_optax": float(np.median(b)),
        **{f"evaluations_ratio_{key}": value for key, value in ratios.items()},
        "jaxfit_fewer_equal_more": [
            int(np.sum(a < b)),
            int(np.sum(a == b)),
            int(np.sum(a > b)),
        ],
    }


def summarize_starts(row: dict) -> dict:
    """``row`` with its per-start lists replaced by their summary: the
    number of starts, how many reached the tolerance, and the median,
    quartiles and range of the evaluations (and the median of the steps)."""
    if "starts" not in row:
        return row
    starts = row["starts"]
    evaluations = _harness.spread([float(e) for e in starts["evaluations"]])
    summary = {"count": len(starts["evaluations"]), "reached": sum(starts["reached"])}
    summary |= {f"evaluations_{key}": value for key, value in evaluations.items()}
    summary["steps_median"] = float(np.median(starts["steps"]))
    return row | {"starts": summary}


def starts_table(summary):
    """The multi-start comparisons as a Markdown table."""
    headers = [
        "problem",
        "family",
        "starts",
        "reached jaxfit / Optax",
        "median evaluations jaxfit / Optax",
        "paired ratio median (min-max)",
        "jaxfit fewer / equal / more",
    ]
    body = [
        [
            line["problem"],
            line["family"],
            line["starts"],
            f"{line['reached_jaxfit']} / {line['reached_optax']}",
            f"{line['evaluations_median_jaxfit']:.0f} / "
            f"{line['evaluations_median_optax']:.0f}",
            f"{line['evaluations_ratio_median']:.3f} "
            f"({line['evaluations_ratio_min']:.2f}-"
            f"{line['evaluations_ratio_max']:.2f})",
            " / ".join(str(n) for n in line["jaxfit_fewer_equal_more"]),
        ]
        for line in summary
        if "starts" in line
    ]
    return _harness.markdown_table(headers, body)


def comparisons(rows):
    """jaxfit / Optax per family, and jaxfit lbfgs / SciPy time, per problem."""
    by_key = {(row["problem"], row["method"]): row for row in rows}
    lines = []
    for problem in dict.fromkeys(row["problem"] for row in rows):
        for family in ("lbfgs", "sgd+backtracking", "sgd+zoom"):
            ours = by_key[(problem, f"jaxfit {family}")]
            theirs = by_key[(problem, f"optax {family}")]
            line = {
                "problem": problem,
                "family": family,
                "evaluations_jaxfit": ours["evaluations"],
                "evaluations_optax": theirs["evaluations"],
                "time_ratio_jaxfit_over_optax": ours["time"]["median_s"]
                / theirs["time"]["median_s"],
            }
            if "starts" in ours:
                line.update(_over_starts(ours["starts"], theirs["starts"]))
            lines.append(line)
        ours = by_key[(problem, "jaxfit lbfgs")]
        scipy_row = by_key[(problem, SCIPY)]
        lines.append(
            {
                "problem": problem,
                "family": "lbfgs vs scipy",
                "evaluations_jaxfit": ours["evaluations"],
                "evaluations_scipy": scipy_row["evaluations"],
                "time_ratio_jaxfit_over_scipy": ours["time"]["median_s"]
                / scipy_row["time"]["median_s"],
            }
        )
    return lines


def plot(document: dict, path) -> Path:
    """Evaluations and time to tolerance per problem and solver (log axes,
    hatched: not reached), and the gradient-descent evaluations jaxfit /
    Optax over the starts (median, whiskers from min to max)."""
    rows, summary = document["rows"], document["comparisons"]
    problems = list(dict.fromkeys(row["problem"] for row in rows))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    by_key = {(row["problem"], row["method"]): row for row in rows}
    plt = _harness.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(19, 4.8))
    hatches = {
        m: [None if by_key[(p, m)]["reached"] else "//" for p in problems]
        for m in methods
    }
    for ax, (label, get) in zip(
        axes[:2],
        [
            ("evaluations to tolerance", lambda r: r["evaluations"]),
            ("time to tolerance (s, median)", lambda r: r["time"]["median_s"]),
        ],
        strict=True,
    ):
        _harness.draw_bars(
            ax,
            {m: [get(by_key[(p, m)]) for p in problems] for m in methods},
            problems,
            hatches=hatches,
            log=True,
            value_labels=False,
            legend=False,
        )
        ax.tick_params(axis="x", labelsize="small")
        ax.set_title(label + " (hatched: not reached)")
    # Over several starts: median paired ratio, whiskers from min to max.
    ax = axes[2]
    multi = [line for line in summary if "starts" in line]
    families = list(dict.fromkeys(line["family"] for line in multi))
    width = 0.8 / max(len(families), 1)
    for index, family in enumerate(families):
        lines = [line for line in multi if line["family"] == family]
        offsets = [
            problems.index(line["problem"]) - 0.4 + width * (index + 0.5)
            for line in lines
        ]
        median = np.array([line["evaluations_ratio_median"] for line in lines])
        low = median - [line["evaluations_ratio_min"] for line in lines]
        high = [line["evaluations_ratio_max"] for line in lines] - median
        ax.errorbar(offsets, median, yerr=[low, high], fmt="o", capsize=4, label=family)
    ax.axhline(
        1.0, color="black", linestyle="--", linewidth=1, label="target: <= 1 (Optax)"
    )
    ax.set_xticks(range(len(problems)), problems, fontsize="small")
    starts = multi[0]["starts"] if multi else 0
    ax.set_title(f"evaluations jaxfit / Optax over {starts} starts (median, range)")
    ax.legend(fontsize="small")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncols=len(methods), fontsize="small"
    )
    return _harness.save_figure(fig, path, rect=(0, 0.08, 1, 1))


CONFIGS = {
    "full": {
        "problems": list(PROBLEMS), "repeats": 9, "target_s": 0.2,
        "lbfgs_cap": 5000, "gd_cap": 20000, "starts": 20,
    },
    "quick": {
        "problems": list(QUICK_PROBLEMS), "repeats": 5, "target_s": 0.02,
        "lbfgs_cap": 2000, "gd_cap": 1000, "starts": 5,
    },
}  # fmt: skip
CONFIGS["smoke"] = CONFIGS["quick"]


# ----------------------------------------------------------------------------
# Entry points for benchmarks/run.py.


def headline(document: dict) -> list[dict]:
    """The rows of benchmarks/run.py's combined table, with the issue's
    targets: no more evaluations than Optax, faster than SciPy once compiled."""
    row = _harness.headline_row
    rows = []
    for line in document["comparisons"]:
        problem, family = line["problem"], line["family"]
        if family == "lbfgs":
            rows.append(
                row(
                    f"{problem}, lbfgs",
                    "optax lbfgs",
                    line["evaluations_jaxfit"] / line["evaluations_optax"],
                    metric="evaluations",
                    target=1.0,
                )
            )
        elif family == "lbfgs vs scipy":
            rows.append(
                row(
                    f"{problem}, lbfgs (compiled)",
                    SCIPY,
                    line["time_ratio_jaxfit_over_scipy"],
                    target=1.0,
                )
            )
        elif "starts" in line:
            # Paired ratios over the starts, with their quartiles.
            ratio = {
                key: line[f"evaluations_ratio_{key}"] for key in ("median", "q1", "q3")
            }
            rows.append(
                row(
                    f"{problem}, {family}, {line['starts']} starts",
                    f"optax {family}",
                    ratio,
                    metric="evaluations",
                    target=1.0,
                )
            )
    return rows


def benchmark(mode: str = "full") -> dict:
    """Entry point for ``benchmarks/run.py``: run, write JSON + PNG, return
    the headline rows ("smoke" is "quick")."""
    config = CONFIGS[mode]
    with jax.enable_x64(True):
        rows = run(
            config["problems"],
            repeats=config["repeats"],
            target_s=config["target_s"],
            lbfgs_cap=config["lbfgs_cap"],
            gd_cap=config["gd_cap"],
            starts=config["starts"],
        )
    summary = comparisons(rows)
    info = _harness.machine_info()
    print(
        f"# Line searches, float64, on {info['cpu_model']} "
        f"({info['cpus_available']} CPUs, {info['backend']})\n"
    )
    print(table(rows))
    print(f"\n## Gradient descent over {config['starts']} starts (evaluations)\n")
    print(starts_table(summary))
    json_path = _harness.results_path("linesearch", "json", tag=_harness.tag_of(mode))
    _harness.write_json(
        json_path,
        {
            "mode": mode,
            "config": config,
            "rows": [summarize_starts(row) for row in rows],
            "comparisons": summary,
        },
    )
    png_path = plot(json.loads(json_path.read_text()), json_path.with_suffix(".png"))
    print(f"\nwrote {json_path} and {png_path}")
    return _harness.collect("linesearch", mode, headline)


def main(argv=None) -> int:
    """``python benchmarks/linesearch.py [--quick]``: see run.py."""
    return _harness.main("linesearch", argv)


if __name__ == "__main__":
    sys.exit(main())
