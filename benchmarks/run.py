"""Runs every benchmark and prints one headline table.

Each module named in ``MODULES`` is imported and its ``benchmark(mode)``
entry point called, one after the other in this process. Every module
measures jaxfit and its competitors side by side, prints its own tables and
writes its own ``benchmarks/results/<name>-<machine>[-quick|-smoke].{json,png}``
(medians and quartiles, no raw samples); it returns headline rows (jaxfit /
competitor ratios, with the targets set in the issues), which are printed
here as one table and written, with the machine's description and the name
of each module's own file (``json``, ``png``), to
``benchmarks/results/<machine>[-quick|-smoke].json``. That combined file
holds only the headline rows: the full results are in the modules' files.

Run::

    python benchmarks/run.py [--quick | --smoke] [--only autodiff,jacobian]
    python benchmarks/run.py --table [--quick]   # re-print the last table
    python benchmarks/run.py --replot [--only curve_fit]  # PNGs from the JSON
    python benchmarks/autodiff.py [--quick]      # the same as --only autodiff

``--quick`` is the CI-sized run of every module (a few minutes on 2 CPU
cores); the full run takes about 30 minutes there. ``--smoke`` runs modules
that have a smoke size (``autodiff``, ``accuracy``) at that size and the
others at their quick size; the tests use it to keep this runner working.
``--only`` runs some modules and merges their headline rows into the
existing combined file of the same mode. ``--replot`` redraws the modules'
PNGs from their stored JSON (after a change of a ``plot`` function) and runs
nothing. ``--out-dir`` reads and writes every file (the modules' too)
elsewhere. Quick and smoke results are not committed (``.gitignore``).

Ratios are "measured / competitor" in the row's metric: for times and
evaluations lower is better, for throughput (samples/s) higher is better; the
target column says which. In brackets: the quartiles of per-round (or
per-start) ratios where the benchmark pairs its measurements.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness

# Every benchmarks/*.py except _harness and run (tests/test_benchmarks.py
# checks that none is missing).
MODULES = (
    "transforms",
    "linesearch",
    "curve_fit",
    "jacobian",
    "streaming",
    "autodiff",
    "accuracy",
    "time_to_result",
)
MODES = ("full", "quick", "smoke")


def combined_path(mode: str) -> Path:
    tag = "" if mode == "full" else f"-{mode}"
    return _harness.RESULTS_DIR / f"{_harness.machine_slug()}{tag}.json"


def run_modules(names, mode: str) -> dict[str, dict]:
    """Runs each module's ``benchmark(mode)``; a failure is recorded, not fatal."""
    results = {}
    for name in names:
        print(f"\n# {name} ({mode})\n", flush=True)
        start = time.perf_counter()
        try:
            module = importlib.import_module(name)
            result = module.benchmark(mode)
        except (Exception, SystemExit):  # report it and go on
            result = {"benchmark": name, "error": traceback.format_exc()}
            result["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            print(result["error"], file=sys.stderr, flush=True)
        result["elapsed_s"] = round(time.perf_counter() - start, 1)
        print(f"\n{name}: {result['elapsed_s']:.0f} s", file=sys.stderr, flush=True)
        results[name] = result
    return results


def replot(names, mode: str) -> int:
    """Redraws each module's PNG from its stored JSON; runs nothing."""
    missing = 0
    for name in names:
        json_path = _harness.results_path(name, "json", tag=_harness.tag_of(mode))
        if not json_path.exists():
            print(f"{name}: no results at {json_path}", file=sys.stderr)
            missing += 1
            continue
        png_path = json_path.with_suffix(".png")
        module = importlib.import_module(name)
        module.plot(json.loads(json_path.read_text()), png_path)
        print(f"wrote {png_path}")
    return 1 if missing else 0


def _met(row: dict) -> str:
    if row.get("met") is None:
        return "-"
    return "met" if row["met"] else "NOT met"


def headline_table(benchmarks: dict[str, dict]) -> str:
    headers = [
        "benchmark", "case", "measured", "competitor", "metric",
        "measured / competitor", "target", "met",
    ]  # fmt: skip
    rows = []
    for name, result in benchmarks.items():
        if "error" in result:
            rows.append([name, "FAILED (see the log)", "", "", "", "", "", ""])
            continue
        for row in result["headline"]:
            rows.append(
                [
                    name,
                    row["case"],
                    row["measured"],
                    row["competitor"],
                    row["metric"],
                    _harness.row_ratio(row),
                    row.get("target_text") or "-",
                    _met(row),
                ]
            )
    return _harness.markdown_table(headers, rows)


def machine_line(info: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    line = (
        f"Machine: {info['cpu_model']} ({info['cpus_available']} CPUs available), "
        f"backend {info['backend']} ({info['device_kind']} x{info['device_count']}); "
        f"{versions}; git {info['git']}"
    )
    if "load_average" in info:
        line += f"; load average at start {info['load_average']}"
    return line


def summary(benchmarks: dict[str, dict]) -> str:
    rows = [row for r in benchmarks.values() for row in r.get("headline", [])]
    judged = [row for row in rows if row.get("met") is not None]
    failed = [name for name, r in benchmarks.items() if "error" in r]
    text = f"{sum(row['met'] for row in judged)} of {len(judged)} targets met"
    if failed:
        text += f"; FAILED: {', '.join(failed)}"
    return text


def print_report(document: dict) -> None:
    print(f"\n# Headline ({document['mode']} run)\n")
    print(machine_line(document["machine"]) + "\n")
    print(headline_table(document["benchmarks"]))
    print("\n" + summary(document["benchmarks"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="CI-sized run")
    size.add_argument(
        "--smoke", action="store_true", help="smallest sizes (for the tests)"
    )
    parser.add_argument(
        "--only", default=None, help=f"comma-separated subset of {', '.join(MODULES)}"
    )
    parser.add_argument(
        "--out-dir", default=None, help="where to write all JSON and PNG results"
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="print the table of the last combined results; run nothing",
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="redraw the PNGs from the stored JSON results; run nothing",
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    names = list(MODULES)
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(names) - set(MODULES))
        if unknown:
            parser.error(f"unknown benchmarks {unknown}; choose from {MODULES}")
    if args.out_dir:
        # Every module writes through _harness.results_path, which reads this.
        _harness.RESULTS_DIR = Path(args.out_dir).resolve()
    path = combined_path(mode)
    if args.table:
        if not path.exists():
            parser.error(f"no results at {path}; run the benchmarks first")
        print_report(json.loads(path.read_text()))
        return 0
    if args.replot:
        return replot(names, mode)

    start = time.perf_counter()
    results = run_modules(names, mode)
    elapsed = time.perf_counter() - start
    benchmarks = {}
    if args.only and path.exists():
        # Keep the other modules' last headline rows of the same mode.
        previous = json.loads(path.read_text())
        benchmarks = {
            name: {key: value for key, value in result.items() if key != "results"}
            for name, result in previous.get("benchmarks", {}).items()
            if name in MODULES
        }
    benchmarks.update(results)
    benchmarks = {name: benchmarks[name] for name in MODULES if name in benchmarks}
    _harness.write_json(
        path,
        {
            "mode": mode,
            "modules_run": names,
            "elapsed_s": round(elapsed, 1),
            "benchmarks": benchmarks,
        },
    )
    print_report(json.loads(path.read_text()))
    print(f"\nwrote {path} in {elapsed:.0f} s")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
