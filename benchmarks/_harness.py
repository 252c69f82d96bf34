"""Shared helpers for the benchmarks: timing, machine info, JSON and plots.

Timing follows three rules, because benchmark machines are shared and noisy:

* warm up first (compilation and first-call costs are not step costs);
* interleave the competitors, one repeat each per round in a rotating order,
  so that a burst of background load hits all of them rather than one;
* report medians over repeats, and ratios per round (paired), which cancel
  slow drifts of the machine's speed.

Nothing here imports jaxfit, so every benchmark can use it.
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# A case is ``run(number)``: do ``number`` iterations of the measured work and
# block until the results are ready (JAX dispatches asynchronously).
Case = Callable[[int], object]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PACKAGES = ("jax", "jaxlib", "optax", "numpy")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpus_available() -> int:
    # The CPUs this process may run on (a container or taskset may hide some).
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_revision() -> str | None:
    """The repository's short commit, with ``+dirty`` for uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine_info(packages: Sequence[str] = PACKAGES) -> dict[str, Any]:
    """Where the numbers come from: OS, CPU, JAX device, package versions."""
    import jax

    device = jax.devices()[0]
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": _cpus_available(),
        "backend": jax.default_backend(),
        "device": str(device),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "versions": {name: _version(name) for name in packages},
        "git": git_revision(),
    }
    if hasattr(os, "getloadavg"):
        # Background load at the start: a hint of how noisy the numbers are.
        info["load_average"] = [round(load, 2) for load in os.getloadavg()]
    return info


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_slug(info: Mapping[str, Any] | None = None) -> str:
    """A short file-name tag for the machine, e.g. ``cpu-2core`` or ``gpu-h100``.

    CPU results depend mostly on the number of cores; accelerator results on
    the device model, whose vendor prefix is dropped to keep names short.
    """
    info = machine_info() if info is None else info
    backend = info["backend"]
    if backend == "cpu":
        return f"cpu-{info['cpus_available']}core"
    kind = _slug(info["device_kind"])
    kind = re.sub(r"^(nvidia|tesla|amd|google)-", "", kind)
    kind = kind.split("-")[0] if backend == "gpu" else kind
    return f"{backend}-{kind}"


def interleaved(
    cases: Mapping[str, Case],
    *,
    repeats: int,
    number: int | None = None,
    target_s: float = 0.05,
    warmup: int = 1,
) -> tuple[dict[str, list[float]], int]:
    """Times ``cases`` round-robin; returns seconds per iteration, per repeat.

    Each case is warmed up ``warmup`` times, then ``number`` iterations form
    one repeat (if ``number`` is None it is chosen so that a repeat of the
    fastest case lasts about ``target_s``, which amortises the final
    ``block_until_ready`` and the timer's resolution). Round ``r`` runs the
    cases in an order rotated by ``r``, so none is always first after a pause.
    The garbage collector is off while timing, as in ``timeit``.

    Returns:
      ``(samples, number)``: ``samples[name][r]`` is the per-iteration time
      of case ``name`` in round ``r``; the lists are aligned by round.
    """
    names = list(cases)
    for name in names:
        for _ in range(warmup):
            cases[name](1)
    if number is None:
        fastest = min(_time_once(cases[name], 1) for name in names)
        number = max(1, math.ceil(target_s / max(fastest, 1e-9)))
    numbers = dict.fromkeys(names, number)
    return _rounds(cases, numbers, dict.fromkeys(names, repeats), repeats), number


def interleaved_per_case(
    cases: Mapping[str, Case],
    *,
    repeats: int,
    target_s: float,
    min_rounds: int = 2,
) -> dict[str, list[float]]:
    """As :func:`interleaved`, but each case gets its own number of
    iterations per sample (about ``target_s`` long), for cases whose times
    differ by orders of magnitude (a compiled solve vs SciPy). A case slower
    than ``target_s`` also gets fewer rounds (at least ``min_rounds``), so
    that it takes about ``repeats * target_s`` in all; ``min_rounds=repeats``
    keeps every round for every case (paired ratios over all rounds). No
    separate warm-up: the first (timed) call of each case is it."""
    single = {name: max(_time_once(case, 1), 1e-9) for name, case in cases.items()}
    numbers = {name: max(1, math.ceil(target_s / t)) for name, t in single.items()}
    rounds = {
        name: min(repeats, max(min_rounds, math.ceil(repeats * target_s / t)))
        for name, t in single.items()
    }
    return _rounds(cases, numbers, rounds, repeats)


def _rounds(cases, numbers, rounds, repeats) -> dict[str, list[float]]:
    """Round-robin timing, rotated each round, with the collector off."""
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_ in range(repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                if round_ < rounds[name]:
                    seconds = _time_once(cases[name], numbers[name])
                    samples[name].append(seconds / numbers[name])
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def _time_once(case: Case, number: int) -> float:
    start = time.perf_counter()
    case(number)
    return time.perf_counter() - start


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles and minimum of per-iteration times (seconds)."""
    q1, median, q3 = _quartiles(samples)
    return {
        "median_s": median,
        "q1_s": q1,
        "q3_s": q3,
        "min_s": min(samples),
        "samples_s": list(samples),
    }


def paired_ratio(
    numerator: Sequence[float], denominator: Sequence[float]
) -> dict[str, float]:
    """Ratio of two cases timed in the same rounds.

    The median of the per-round ratios is robust to drifts of the machine's
    speed during the run; the ratio of the medians is given alongside.
    """
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    q1, median, q3 = _quartiles(ratios)
    return {
        "median": median,
        "q1": q1,
        "q3": q3,
        "of_medians": statistics.median(numerator) / statistics.median(denominator),
    }


def format_seconds(seconds: float) -> str:
    """A time in the unit that keeps 3-4 significant digits (µs or ms)."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [
        max(len(headers[i]), *(len(row[i]) for row in cells))
        for i in range(len(headers))
    ]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) for row in rows)
        for i in range(len(headers))
    ]

    def line(row):
        padded = [
            cell.rjust(width) if numeric[i] else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (width - 1) + (":" if numeric[i] else "-")
        for i, width in enumerate(widths)
    ]
    return "\n".join([line(headers), line(rule), *(line(row) for row in cells)])


def results_path(benchmark: str, suffix: str, *, tag: str = "", out_dir=None) -> Path:
    """``<out_dir>/<benchmark>-<machine>[-<tag>].<suffix>``."""
    out_dir = RESULTS_DIR if out_dir is None else Path(out_dir)
    name = f"{benchmark}-{machine_slug()}" + (f"-{tag}" if tag else "")
    return out_dir / f"{name}.{suffix}"


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    """Writes ``payload`` with the machine info and a UTC timestamp added."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def bar_chart(
    path: Path,
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    categories: Sequence[str],
    *,
    errors: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]] | None = None,
    ylabel: str = "",
    xlabel: str = "",
    title: str = "",
    reference: float | None = None,
    ncols: int = 2,
) -> Path:
    """Grouped bar charts, one panel per entry of ``panels``, saved as PNG.

    ``panels[panel][series]`` holds one value per category; ``errors`` (same
    keys) optional ``(low, high)`` bounds drawn as error bars; ``reference``
    a dashed horizontal line (1.0 for ratios).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on benchmark machines
    import matplotlib.pyplot as plt

    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False, sharey=True
    )
    for ax, (panel, series) in zip(axes.flat, panels.items(), strict=False):
        width = 0.8 / max(len(series), 1)
        for index, (name, values) in enumerate(series.items()):
            offsets = [i - 0.4 + width * (index + 0.5) for i in range(len(categories))]
            yerr = None
            if errors is not None and name in errors.get(panel, {}):
                bounds = errors[panel][name]
                yerr = [
                    [max(v - lo, 0) for v, (lo, _) in zip(values, bounds, strict=True)],
                    [max(hi - v, 0) for v, (_, hi) in zip(values, bounds, strict=True)],
                ]
            ax.bar(offsets, values, width, label=name, yerr=yerr, capsize=3)
        if reference is not None:
            ax.axhline(reference, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(categories)), categories)
        ax.set_title(panel)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# Headline rows: what ``benchmarks/run.py`` gathers from every benchmark.


def headline_row(
    case: str,
    competitor: str,
    ratio: Mapping[str, float] | float,
    *,
    metric: str = "time",
    better: str = "lower",
    target: float | None = None,
    met: bool | None = None,
    target_text: str | None = None,
    measured: str = "jaxfit",
) -> dict[str, Any]:
    """One row of the combined table: ``measured`` / ``competitor`` in ``metric``.

    ``ratio`` is a float or a :func:`paired_ratio` dict (median and
    quartiles). ``better`` says which way is good ("lower" for times,
    "higher" for throughput); with a numeric ``target`` the row is met when
    the median is on the good side of it. A target that is not a bound on
    the ratio is given as ``target_text`` with its own ``met``.
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    if isinstance(ratio, Mapping):
        median, q1, q3 = ratio["median"], ratio.get("q1"), ratio.get("q3")
    else:
        median, q1, q3 = float(ratio), None, None
    if target is not None:
        met = median <= target if better == "lower" else median >= target
        target_text = f"{'<=' if better == 'lower' else '>='} {target:g}"
    return {
        "case": case,
        "measured": measured,
        "competitor": competitor,
        "metric": metric,
        "better": better,
        "ratio": median,
        "q1": q1,
        "q3": q3,
        "target": target,
        "target_text": target_text,
        "met": None if met is None else bool(met),
    }


def inverse_ratio(ratio: Mapping[str, float]) -> dict[str, float]:
    """``1 / ratio`` of a :func:`paired_ratio` dict (quartiles swap)."""
    inverted = {"median": 1 / ratio["median"]}
    if "q1" in ratio and "q3" in ratio:
        inverted |= {"q1": 1 / ratio["q3"], "q3": 1 / ratio["q1"]}
    if "of_medians" in ratio:
        inverted["of_medians"] = 1 / ratio["of_medians"]
    return inverted


def collect(benchmark: str, tag: str, headline: Callable[[dict], list]) -> dict:
    """What a benchmark's ``benchmark(mode)`` entry point returns to run.py.

    Reads back the JSON document the benchmark just wrote (so the entry
    point depends on its results, not on its internals) and derives the
    headline rows from it with ``headline(document)``.
    """
    json_path = results_path(benchmark, "json", tag=tag)
    document = json.loads(json_path.read_text())
    return {
        "benchmark": benchmark,
        "json": str(json_path),
        "png": str(json_path.with_suffix(".png")),
        "headline": headline(document),
        "results": document,
    }
