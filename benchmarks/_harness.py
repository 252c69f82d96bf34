"""Shared helpers for the benchmarks: timing, summaries, JSON, tables, plots.

Timing follows three rules, because benchmark machines are shared and noisy:

* warm up first (compilation and first-call costs are not step costs);
* interleave the competitors, one repeat each per round in a rotating order,
  so that a burst of background load hits all of them rather than one;
* report medians over repeats, and ratios per round (paired), which cancel
  slow drifts of the machine's speed.

Results are stored as summaries (medians and quartiles, not raw samples) in
compact JSON (:func:`dumps`), and plotted as palette PNGs (:func:`save_figure`),
so that the committed results stay small. Every benchmark module has the same
entry points, which ``benchmarks/run.py`` (the one command line) calls:
``benchmark(mode)``, ``headline(document)`` and ``plot(document, path)``.

Nothing here imports jaxfit, so every benchmark can use it.
"""

from __future__ import annotations

import datetime
import gc
import io
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
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


# ---------------------------------------------------------------------------
# Summaries: what is stored of the samples.

# Timings vary by a percent or more between rounds: six significant digits
# keep every printed ratio exact and the JSON short.
SIGNIFICANT = 6


def significant(value: float | None, digits: int = SIGNIFICANT) -> float | None:
    """``value`` rounded to ``digits`` significant digits (None stays None)."""
    if value is None or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles and minimum of per-iteration times (seconds), and
    the number of samples; the samples themselves are not kept."""
    q1, median, q3 = _quartiles(samples)
    return {
        "median_s": significant(median),
        "q1_s": significant(q1),
        "q3_s": significant(q3),
        "min_s": significant(min(samples)),
        "n": len(samples),
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
    of_medians = statistics.median(numerator) / statistics.median(denominator)
    return {
        "median": significant(median),
        "q1": significant(q1),
        "q3": significant(q3),
        "of_medians": significant(of_medians),
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and range of values that are not paired times
    (evaluations over starts, say)."""
    q1, median, q3 = _quartiles(values)
    return {
        "median": significant(median),
        "q1": significant(q1),
        "q3": significant(q3),
        "min": significant(min(values)),
        "max": significant(max(values)),
    }


# ---------------------------------------------------------------------------
# Text: numbers, ratios, Markdown tables.


def format_seconds(seconds: float) -> str:
    """A time in the unit that keeps 3-4 significant digits (µs or ms)."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def format_ratio(ratio: Mapping[str, float] | float, fmt: str = ".3g") -> str:
    """``median (q1-q3)`` of a :func:`paired_ratio` dict, or a plain number."""
    if not isinstance(ratio, Mapping):
        return format(ratio, fmt)
    text = format(ratio["median"], fmt)
    if ratio.get("q1") is not None and ratio.get("q3") is not None:
        text += f" ({ratio['q1']:{fmt}}-{ratio['q3']:{fmt}})"
    return text


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


# ---------------------------------------------------------------------------
# Files: names, compact JSON.


def tag_of(mode: str) -> str:
    """The file-name tag of a run mode: "" for full runs, else the mode."""
    if mode not in ("full", "quick", "smoke"):
        raise ValueError(f"mode must be 'full', 'quick' or 'smoke', got {mode!r}")
    return "" if mode == "full" else mode


def results_path(benchmark: str, suffix: str, *, tag: str = "", out_dir=None) -> Path:
    """``<out_dir>/<benchmark>-<machine>[-<tag>].<suffix>``."""
    out_dir = RESULTS_DIR if out_dir is None else Path(out_dir)
    name = f"{benchmark}-{machine_slug()}" + (f"-{tag}" if tag else "")
    return out_dir / f"{name}.{suffix}"


# An object of scalars and of lists or objects of scalars (a record) that is
# a member of an object takes one line if it is at most this long, with its
# indentation; in a list (a table's rows) it always does.
JSON_WIDTH = 300


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def dumps(
    value: Any, *, width: int = JSON_WIDTH, _indent: int = 0, _row: bool = False
) -> str:
    """JSON, indented by two spaces down to the records, which take one line.

    A list or object of scalars always takes one line, and so does a record
    (an object of scalars and of such leaves) that is an item of a list: a
    line per row of a table. A record that is a member of an object takes
    one line if it fits in ``width``; anything else is indented, a member or
    item per line. ``json.loads`` reads it back unchanged.
    """
    line = json.dumps(value, ensure_ascii=False)
    depth = _depth(value)
    if depth <= 1 or (
        depth == 2
        and isinstance(value, dict)
        and (_row or _indent + len(line) <= width)
    ):
        return line
    pad = " " * (_indent + 2)
    if isinstance(value, dict):
        items = [
            f"{pad}{json.dumps(key, ensure_ascii=False)}: "
            + dumps(item, width=width, _indent=_indent + 2)
            for key, item in value.items()
        ]
        brackets = "{}"
    else:
        items = [
            pad + dumps(item, width=width, _indent=_indent + 2, _row=True)
            for item in value
        ]
        brackets = "[]"
    if not items:
        return brackets
    return brackets[0] + "\n" + ",\n".join(items) + "\n" + " " * _indent + brackets[1]


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    """Writes ``payload`` with the machine info and a UTC timestamp added,
    compactly (:func:`dumps`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **payload,
    }
    path.write_text(dumps(document) + "\n")
    return path


# ---------------------------------------------------------------------------
# Plots.

# Ratios whose largest is this many times the smallest get a log axis.
LOG_SPAN = 20.0
DPI = 100
# Line styles of the horizontal lines (reference, then targets), in order.
_LINE_STYLES = (
    {"color": "black", "linestyle": "--"},
    {"color": "tab:red", "linestyle": ":"},
    {"color": "tab:purple", "linestyle": "-."},
    {"color": "tab:brown", "linestyle": ":"},
)


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def wants_log(values: Sequence[float], span: float = LOG_SPAN) -> bool:
    """Whether positive ``values`` span more than ``span`` times."""
    positive = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    return len(positive) > 1 and max(positive) > span * min(positive)


def _value_label(value: float) -> str:
    if not math.isfinite(value):
        return ""
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-2):
        return f"{value:.1e}".replace("e+0", "e").replace("e-0", "e-")
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def draw_bars(
    ax,
    series: Mapping[str, Sequence[float]],
    categories: Sequence[str],
    *,
    errors: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    hatches: Mapping[str, Sequence[str | None]] | None = None,
    targets: Mapping[str, Sequence[float | None]] | None = None,
    lines: Mapping[str, float] | None = None,
    log: bool | None = None,
    value_labels: bool = True,
    legend: bool = True,
) -> None:
    """Grouped bars on ``ax``: one group per category, one bar per series.

    ``errors[series]`` holds ``(low, high)`` bounds per category (drawn as
    error bars), ``hatches[series]`` a hatch per bar, ``targets[series]`` a
    target per bar or None (a red tick across the bar); ``lines`` labelled
    horizontal lines (a reference such as 1.0, or a target common to all
    bars), drawn in the legend. ``log``: a log axis; None chooses one when
    the values, targets and lines span more than :data:`LOG_SPAN` times.
    ``value_labels`` writes each bar's value on it.
    """
    lines = dict(lines or {})
    targets = dict(targets or {})
    values = [v for vs in series.values() for v in vs] + list(lines.values())
    values += [t for ts in targets.values() for t in ts if t is not None]
    if log is None:
        log = wants_log(values)
    target_label = "target"
    width = 0.8 / max(len(series), 1)
    for index, (name, heights) in enumerate(series.items()):
        offsets = [i - 0.4 + width * (index + 0.5) for i in range(len(categories))]
        yerr = None
        if errors is not None and name in errors:
            bounds = errors[name]
            yerr = [
                [max(v - lo, 0) for v, (lo, _) in zip(heights, bounds, strict=True)],
                [max(hi - v, 0) for v, (_, hi) in zip(heights, bounds, strict=True)],
            ]
        bars = ax.bar(offsets, heights, width, label=name, yerr=yerr, capsize=3)
        if hatches is not None and name in hatches:
            for bar, hatch in zip(bars, hatches[name], strict=True):
                bar.set_hatch(hatch)
        for x, target in zip(offsets, targets.get(name, ()), strict=False):
            if target is not None:
                ax.hlines(
                    target, x - 0.55 * width, x + 0.55 * width, color="tab:red",
                    linewidth=2.5, label=target_label, zorder=3,
                )  # fmt: skip
                target_label = None
        if value_labels:
            ax.bar_label(
                bars,
                labels=[_value_label(v) for v in heights],
                fontsize=6.5,
                padding=1,
            )
    for (label, value), style in zip(
        lines.items(), _LINE_STYLES * len(lines), strict=False
    ):
        ax.axhline(value, linewidth=1.2, label=label, **style)
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.12)  # room for the value labels
    ax.set_xticks(range(len(categories)), categories)
    if legend:
        ax.legend(fontsize="x-small")


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
    reference_label: str = "same as the competitor",
    lines: Mapping[str, float] | None = None,
    panel_lines: Mapping[str, Mapping[str, float]] | None = None,
    log: bool | None = None,
    ncols: int = 2,
    sharey: bool = True,
    value_labels: bool = True,
) -> Path:
    """Grouped bar charts, one panel per entry of ``panels``, saved as PNG.

    ``panels[panel][series]`` holds one value per category; ``errors`` (same
    keys) optional ``(low, high)`` bounds drawn as error bars; ``reference``
    a dashed line (1.0 for ratios), ``lines`` more labelled lines (targets)
    on every panel and ``panel_lines[panel]`` on one. ``log`` as in
    :func:`draw_bars`, chosen once for all panels when they share the axis.
    """
    plt = pyplot()
    common = {} if reference is None else {reference_label: reference}
    common |= dict(lines or {})
    per_panel = {
        panel: common | dict((panel_lines or {}).get(panel, {})) for panel in panels
    }
    if log is None and sharey:
        everything = [v for s in panels.values() for vs in s.values() for v in vs]
        everything += [v for ls in per_panel.values() for v in ls.values()]
        log = wants_log(everything)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False, sharey=sharey
    )
    for ax, (panel, series) in zip(axes.flat, panels.items(), strict=False):
        draw_bars(
            ax,
            series,
            categories,
            errors=None if errors is None else errors.get(panel),
            lines=per_panel[panel],
            log=log,
            value_labels=value_labels,
        )
        ax.set_title(panel, fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def save_figure(
    fig, path: Path, *, dpi: int = DPI, colors: int = 64, rect=(0, 0, 1, 1)
) -> Path:
    """Lays ``fig`` out (``tight_layout`` in ``rect``), saves it as a palette
    PNG (``colors`` colours, no dithering) and closes it: plots have few
    colours, and a palette image is about a third of the size of the RGBA
    one matplotlib writes."""
    plt = pyplot()
    fig.tight_layout(rect=rect)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    try:
        from PIL import Image
    except ImportError:  # matplotlib depends on Pillow; keep the RGBA file
        path.write_bytes(buffer.getvalue())
        return path
    image = Image.open(buffer).convert("RGB")
    image = image.quantize(colors=colors, dither=Image.Dither.NONE)
    image.save(path, format="PNG", optimize=True)
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


def row_ratio(row: Mapping[str, Any]) -> str:
    """A headline row's ``ratio (q1-q3)``."""
    return format_ratio({"median": row["ratio"], "q1": row["q1"], "q3": row["q3"]})


def verdict(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per headline row that has a target: met or not, and a count."""
    judged = [row for row in rows if row.get("met") is not None]
    lines = [
        f"{'met' if row['met'] else 'NOT met':7} {row['case']}: {row['measured']} / "
        f"{row['competitor']} ({row['metric']}) = {row_ratio(row)}, "
        f"target {row['target_text']}"
        for row in judged
    ]
    lines.append(f"{sum(row['met'] for row in judged)} of {len(judged)} targets met")
    return "\n".join(lines)


def collect(benchmark: str, mode: str, headline: Callable[[dict], list]) -> dict:
    """What a benchmark's ``benchmark(mode)`` entry point returns to run.py.

    Reads back the JSON document the benchmark just wrote (so the entry
    point depends on its results, not on its internals), derives the
    headline rows from it with ``headline(document)`` and prints their
    verdict. The results stay in the module's own file, which ``json`` and
    ``png`` name (relative to the results directory).
    """
    json_path = results_path(benchmark, "json", tag=tag_of(mode))
    document = json.loads(json_path.read_text())
    rows = headline(document)
    print("\n" + verdict(rows))
    return {
        "benchmark": benchmark,
        "json": json_path.name,
        "png": json_path.with_suffix(".png").name,
        "created": document.get("created"),
        "headline": rows,
    }


def main(benchmark: str, argv: Sequence[str] | None = None) -> int:
    """A module's own command line: ``run.py --only <benchmark> [options]``
    (``--quick``, ``--smoke``, ``--replot``, ``--out-dir``; see run.py)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import run  # benchmarks/run.py, next to this file

    argv = list(sys.argv[1:] if argv is None else argv)
    return run.main(["--only", benchmark, *argv])


def run_child(script: str, *args: str) -> dict:
    """Runs ``python script *args`` in a fresh process and returns the JSON
    object its last line of output holds (raises with its stderr if it
    failed): how the benchmarks time a first call or measure memory."""
    command = [sys.executable, script, *map(str, args)]
    output = subprocess.run(command, capture_output=True, text=True)
    if output.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def fresh_process_pair(once, measured: str, competitor: str, rounds: int) -> dict:
    """``once(driver)`` seconds for two drivers in ``rounds`` interleaved
    rounds (the competitor first in each): ``measured``, ``competitor``,
    their spreads and the paired ratio, for a time-to-result record."""
    times = {measured: [], competitor: []}
    for _ in range(rounds):
        for driver in (competitor, measured):
            times[driver].append(once(driver))
    return {
        "measured": measured,
        "competitor": competitor,
        "measured_s": spread(times[measured]),
        "competitor_s": spread(times[competitor]),
        "ratio": paired_ratio(times[measured], times[competitor]),
    }
