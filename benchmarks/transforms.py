"""Per-step time of ``chain(clip_by_global_norm, adam)``: jaxfit vs Optax.

What is measured, in one process, for the same total number of float32
parameters split into 1, 100 and 1000 leaves (1-D, near-equal sizes):

* ``optax``: ``optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))``;
* ``jaxfit``: ``jaxfit.chain(jaxfit.clip_by_global_norm(1.0), jaxfit.adam(1e-3))``;
* ``jaxfit flat``: ``optax.flatten`` around the jaxfit chain: the gradients
  are concatenated into one vector, the update (and Adam's state) is one
  vector, and the update is split back into leaves.

A step is ``tx.update`` followed by ``apply_updates``, jitted, in two modes:

* ``loop``: a Python loop calling the jitted step on fixed gradients, params
  and optimizer state donated (as a training loop would), blocking once at
  the end. This includes JAX's per-call dispatch, which grows with the number
  of leaves passed in and out.
* ``scan``: one jitted ``lax.scan`` over many steps, the gradient being the
  params themselves (the gradient of ``|p|^2 / 2``) so that it changes every
  step and XLA cannot hoist the clipping norm out of the loop. Params and
  state are created inside the jitted function, so the time is the compiled
  step alone, not the transfer of thousands of buffers in and out of a call.

The competitors are timed in interleaved rounds; the table gives median
times per step and the median per-round ratio to Optax (lower is better; the
target is <= 1) with its interquartile range. Results are written to
``benchmarks/results/transforms-<machine>.json`` and ``.png``.

Run::

    python benchmarks/transforms.py [--quick]   # = run.py --only transforms

A full run (2**20 parameters) takes about 3 minutes on 2 busy CPU cores, most
of it compiling the 1000-leaf steps. ``--quick`` (and ``--smoke``) is a
CI-sized run (< 30 s: 2**16 parameters, 1/10/100 leaves, fewer repeats) that
writes ``transforms-<machine>-quick.json``/``.png`` instead.
"""

from __future__ import annotations

import dataclasses
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

import jaxfit

MAX_NORM = 1.0
LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class Variant:
    label: str
    make_tx: Callable[[], optax.GradientTransformation]
    apply_updates: Callable


VARIANTS = {
    "optax": Variant(
        "optax",
        lambda: optax.chain(
            optax.clip_by_global_norm(MAX_NORM), optax.adam(LEARNING_RATE)
        ),
        optax.apply_updates,
    ),
    "jaxfit": Variant(
        "jaxfit",
        lambda: jaxfit.chain(
            jaxfit.clip_by_global_norm(MAX_NORM), jaxfit.adam(LEARNING_RATE)
        ),
        jaxfit.apply_updates,
    ),
    "jaxfit_flat": Variant(
        "jaxfit flat",
        lambda: optax.flatten(
            jaxfit.chain(
                jaxfit.clip_by_global_norm(MAX_NORM), jaxfit.adam(LEARNING_RATE)
            )
        ),
        jaxfit.apply_updates,
    ),
}
BASELINE = "optax"


@dataclass(frozen=True)
class Config:
    totals: tuple[int, ...]
    leaves: tuple[int, ...]
    repeats: int
    target_s: float  # length of one timed repeat of the fastest variant
    scan_steps: int  # steps per lax.scan call


# Compiling one 1000-leaf step takes 10-30 s on 2 cores (most of a full run),
# so the full run has one total size (a small, dispatch-bound one, say
# ``totals=(2**20, 4096)``, makes it about twice as long) and the quick run
# stops at 100 leaves.
FULL = Config(
    totals=(2**20,), leaves=(1, 100, 1000), repeats=9, target_s=0.05,
    scan_steps=64,
)  # fmt: skip
QUICK = Config(
    totals=(2**16,), leaves=(1, 10, 100), repeats=3, target_s=0.01, scan_steps=16
)
CONFIGS = {"full": FULL, "quick": QUICK, "smoke": QUICK}


def leaf_shapes(total: int, leaves: int) -> list[tuple[int]]:
    """``leaves`` 1-D shapes of near-equal sizes summing exactly to ``total``."""
    base, extra = divmod(total, leaves)
    return [(base + (i < extra),) for i in range(leaves)]


def make_tree(shapes, rng: np.random.Generator, scale: float) -> dict:
    # Random, non-constant values: the clip is active (global norm >> 1) and
    # no element is zero or denormal.
    return {
        f"w{i:04d}": jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)
        for i, shape in enumerate(shapes)
    }


def jit_loop_step(variant: Variant, tx):
    """The jitted step ``(params, state, grads) -> (params, state)``.

    Returned as a ``jax.jit`` function, not an AOT-compiled one: calling a
    ``Compiled`` object skips jit's C++ fast path and costs ~30% more per
    call at 1000 leaves, which a user's training loop would not pay.
    """

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return variant.apply_updates(params, updates), state

    # Donation lets XLA update params and state in place, as a training loop
    # does; without it every step allocates fresh outputs and the timing is
    # dominated by the allocator.
    return jax.jit(step, donate_argnums=(0, 1))


def jit_scan(variant: Variant, tx, shapes, steps: int):
    """The jitted ``x -> x'``: build params and state, run ``steps`` steps.

    The result feeds the next call, so successive calls run one after the
    other (independent calls could overlap on the CPU's thread pool), and it
    depends on the final params so that nothing is dead code.
    """

    def run(x):
        params = {f"w{i:04d}": jnp.full(s, x) for i, s in enumerate(shapes)}

        def body(carry, _):
            params, state = carry
            updates, state = tx.update(params, state, params)
            return (variant.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), length=steps)
        return x + 1e-30 * optax.tree.norm(params)

    return jax.jit(run)


def time_loop(shapes, config: Config, rng) -> dict:
    params0 = make_tree(shapes, rng, 1.0)
    grads = make_tree(shapes, rng, 0.1)
    cases, first_call_s, finals = {}, {}, {}
    for name, variant in VARIANTS.items():
        tx = variant.make_tx()
        step = jit_loop_step(variant, tx)
        # Three steps from the same start: the first compiles, all warm up,
        # and their results check that the variants compute the same thing
        # (on copies: the inputs are donated).
        params, state = jax.tree.map(jnp.copy, params0), tx.init(params0)
        start = time.perf_counter()
        params, state = jax.block_until_ready(step(params, state, grads))
        first_call_s[name] = time.perf_counter() - start
        for _ in range(2):
            params, state = step(params, state, grads)
        finals[name] = params
        cases[name] = _loop_case(step, [params, state], grads)
    for name in VARIANTS:
        np.testing.assert_allclose(
            _ravel(finals[name]), _ravel(finals[BASELINE]), rtol=1e-5, atol=1e-6
        )
    samples, number = _harness.interleaved(
        cases, repeats=config.repeats, target_s=config.target_s
    )
    return {
        "samples": samples,
        "steps_per_sample": number,
        "first_call_s": first_call_s,
    }


def _loop_case(step, carry: list, grads):
    def run(number):
        params, state = carry
        for _ in range(number):
            params, state = step(params, state, grads)
        carry[:] = jax.block_until_ready((params, state))

    return run


def time_scan(shapes, config: Config) -> dict:
    cases, first_call_s, outputs = {}, {}, {}
    for name, variant in VARIANTS.items():
        run = jit_scan(variant, variant.make_tx(), shapes, config.scan_steps)
        start = time.perf_counter()
        outputs[name] = float(run(jnp.float32(0.5)) - 0.5) * 1e30
        first_call_s[name] = time.perf_counter() - start
        cases[name] = _scan_case(run)
    for name in VARIANTS:
        np.testing.assert_allclose(outputs[name], outputs[BASELINE], rtol=1e-4)
    samples, calls = _harness.interleaved(
        cases, repeats=config.repeats, target_s=config.target_s
    )
    per_step = {
        name: [t / config.scan_steps for t in times] for name, times in samples.items()
    }
    return {
        "samples": per_step,
        "steps_per_sample": calls * config.scan_steps,
        "first_call_s": first_call_s,
    }


def _scan_case(run):
    x = [jnp.float32(0.5)]

    def case(number):
        value = x[0]
        for _ in range(number):
            value = run(value)
        x[0] = value.block_until_ready()

    return case


def _ravel(tree) -> np.ndarray:
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def run_benchmark(config: Config) -> list[dict]:
    rng = np.random.default_rng(0)
    records = []
    for total in config.totals:
        for leaves in config.leaves:
            shapes = leaf_shapes(total, leaves)
            for mode in ("loop", "scan"):
                start = time.perf_counter()
                if mode == "loop":
                    measured = time_loop(shapes, config, rng)
                else:
                    measured = time_scan(shapes, config)
                samples = measured.pop("samples")
                record = {
                    "total": total,
                    "leaves": leaves,
                    "mode": mode,
                    **measured,
                    "times": {n: _harness.summarize(s) for n, s in samples.items()},
                    "ratio_to_optax": {
                        n: _harness.paired_ratio(s, samples[BASELINE])
                        for n, s in samples.items()
                        if n != BASELINE
                    },
                }
                records.append(record)
                print(
                    f"  total={total} leaves={leaves} {mode}: "
                    f"{time.perf_counter() - start:.1f} s (first calls, mostly "
                    f"compiling: {sum(measured['first_call_s'].values()):.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    return records


def table(records: list[dict]) -> str:
    headers = ["total", "leaves", "mode"]
    headers += [f"{v.label} /step" for v in VARIANTS.values()]
    headers += [f"{v.label} / optax" for n, v in VARIANTS.items() if n != BASELINE]
    rows = []
    for record in records:
        row = [record["total"], record["leaves"], record["mode"]]
        row += [
            _harness.format_seconds(record["times"][name]["median_s"])
            for name in VARIANTS
        ]
        row += [
            _harness.format_ratio(r, ".2f") for r in record["ratio_to_optax"].values()
        ]
        rows.append(row)
    return _harness.markdown_table(headers, rows)


def plot(document: dict, path) -> Path:
    """Time per step over Optax's, per leaf count, one panel per total size
    and mode (loop, scan), with the target (<= 1) drawn."""
    records, totals = document["results"], document["config"]["totals"]
    leaves = document["config"]["leaves"]
    others = [n for n in VARIANTS if n != BASELINE]
    panels, errors = {}, {}
    for total in totals:
        for mode in ("loop", "scan"):
            panel = f"{mode}, total {total} float32"
            chosen = [r for r in records if r["total"] == total and r["mode"] == mode]
            ratios = {n: [r["ratio_to_optax"][n] for r in chosen] for n in others}
            label = {n: f"{VARIANTS[n].label} / optax" for n in others}
            panels[panel] = {label[n]: [r["median"] for r in ratios[n]] for n in others}
            errors[panel] = {
                label[n]: [(r["q1"], r["q3"]) for r in ratios[n]] for n in others
            }
    return _harness.bar_chart(
        path,
        panels,
        [str(count) for count in leaves],
        errors=errors,
        xlabel="leaves (same total size)",
        ylabel="time per step / Optax's",
        title="chain(clip_by_global_norm, adam): time per step over Optax's "
        "(lower is better)",
        reference=1.0,
        reference_label="target: <= 1 (Optax)",
    )


def headline(document: dict) -> list[dict]:
    """The rows of benchmarks/run.py's combined table (target: <= 1 Optax)."""
    rows = []
    totals = {r["total"] for r in document["results"]}
    for r in document["results"]:
        case = f"{r['leaves']} leaves, {r['mode']}"
        if len(totals) > 1:
            case = f"{r['total']} params, {case}"
        for name, ratio in r["ratio_to_optax"].items():
            flat = name == "jaxfit_flat"
            rows.append(
                _harness.headline_row(
                    case,
                    "optax",
                    ratio,
                    metric="time/step",
                    # flatten is opt-in, with no target of its own
                    target=None if flat else 1.0,
                    measured=VARIANTS[name].label if flat else "jaxfit",
                )
            )
    return rows


def benchmark(mode: str = "full") -> dict:
    """Entry point for ``benchmarks/run.py``: run, write JSON + PNG, return
    the headline rows ("smoke" is "quick")."""
    config = CONFIGS[mode]
    start = time.perf_counter()
    print(f"machine: {_harness.machine_slug()}", file=sys.stderr)
    records = run_benchmark(config)
    elapsed = time.perf_counter() - start

    print(table(records))
    json_path = _harness.results_path("transforms", "json", tag=_harness.tag_of(mode))
    png_path = json_path.with_suffix(".png")
    _harness.write_json(
        json_path,
        {
            "benchmark": "transforms",
            "description": "per-step time of chain(clip_by_global_norm(1.0), "
            "adam(1e-3)): tx.update + apply_updates, jitted; ratios are "
            "medians of per-round ratios to optax (lower is better)",
            "variants": {n: v.label for n, v in VARIANTS.items()},
            "config": dataclasses.asdict(config) | {"mode": mode},
            "jaxfit_version": jaxfit.__version__,
            "elapsed_s": round(elapsed, 1),
            "results": records,
        },
    )
    plot(json.loads(json_path.read_text()), png_path)
    print(f"\nwrote {json_path} and {png_path.name} in {elapsed:.0f} s")
    return _harness.collect("transforms", mode, headline)


def main(argv=None) -> int:
    """``python benchmarks/transforms.py [--quick]``: see run.py."""
    return _harness.main("transforms", argv)


if __name__ == "__main__":
    sys.exit(main())
