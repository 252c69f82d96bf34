"""benchmarks/run.py keeps working: every module registered, a smoke run, and
the results stay compact (summaries in compact JSON, no file repeating
another)."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
NOT_BENCHMARKS = {"_harness", "run"}
# What git may hold under benchmarks/results, in lines (wc -l, PNGs included).
RESULTS_LINE_BUDGET = 3000

sys.path.insert(0, str(BENCHMARKS))
import _harness  # noqa: E402


def benchmark_modules() -> list[str]:
    return sorted(
        path.stem for path in BENCHMARKS.glob("*.py") if path.stem not in NOT_BENCHMARKS
    )


def top_level(path: Path) -> dict[str, ast.AST]:
    """Top-level function and assignment names of a file, without importing it."""
    names = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
    return names


def test_every_benchmark_module_is_registered_in_run():
    registered = ast.literal_eval(top_level(BENCHMARKS / "run.py")["MODULES"].value)
    assert sorted(registered) == benchmark_modules()
    assert len(set(registered)) == len(registered)


def test_every_benchmark_module_has_the_entry_points_run_calls():
    for name in benchmark_modules():
        functions = top_level(BENCHMARKS / f"{name}.py")
        for entry in ("benchmark", "headline", "plot", "main"):
            assert entry in functions, f"{name}.py has no {entry}()"


def test_no_benchmark_module_has_a_command_line_of_its_own():
    # One command line: run.py; a module's main() calls _harness.main.
    for name in benchmark_modules():
        assert "argparse" not in (BENCHMARKS / f"{name}.py").read_text(), name


def test_summaries_keep_no_samples():
    samples = [3.0, 1.0, 2.0, 5.0, 4.0]
    summary = _harness.summarize(samples)
    assert summary == {"median_s": 3.0, "q1_s": 2.0, "q3_s": 4.0, "min_s": 1.0, "n": 5}
    ratio = _harness.paired_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 3.0])
    assert ratio == {"median": 2.0, "q1": 2.0, "q3": 3.0, "of_medians": 4.0}
    assert _harness.paired_ratio([1.0], [3.0])["median"] == 0.333333


def test_dumps_puts_records_on_one_line_and_reads_back():
    document = {
        "machine": {"backend": "cpu", "versions": {"jax": "0.1"}},
        "rows": [
            {"case": "a", "times": {"median_s": 1.5, "n": 3}, "flags": [True]},
            {"case": "b", "nested": {"deeper": {"x": [1, 2]}}},
        ],
        "empty": {},
        "text": "µs",
    }
    text = _harness.dumps(document)
    assert json.loads(text) == document
    lines = text.splitlines()
    assert '  "machine": {"backend": "cpu", "versions": {"jax": "0.1"}},' in lines
    assert '        "deeper": {"x": [1, 2]}' in lines
    assert any(line.strip().startswith('{"case": "a"') for line in lines)
    # A record too wide for one line is split into its leaves, unless it is
    # a row of a list.
    record = {f"key{i}": {"v": i} for i in range(40)}
    wide = {"record": record, "rows": [record]}
    text = _harness.dumps(wide)
    assert json.loads(text) == wide
    assert len(text.splitlines()) == 1 + 42 + 3 + 1


def _committed_results() -> list[Path]:
    """The results a commit holds: every file in ``benchmarks/results`` but
    the quick and smoke runs, which ``.gitignore`` keeps out."""
    ignored = (BENCHMARKS.parent / ".gitignore").read_text().splitlines()
    assert {"benchmarks/results/*-quick.*", "benchmarks/results/*-smoke.*"} <= set(
        ignored
    )
    return sorted(
        path
        for path in (BENCHMARKS / "results").iterdir()
        if path.is_file() and "-quick." not in path.name and "-smoke." not in path.name
    )


def test_committed_results_are_compact():
    paths = _committed_results()
    assert {p.suffix for p in paths} == {".json", ".png"}
    lines = sum(path.read_bytes().count(b"\n") for path in paths)
    assert lines < RESULTS_LINE_BUDGET, f"{lines} lines in benchmarks/results"
    contents = [path.read_bytes() for path in paths]
    assert len(set(contents)) == len(contents), "two results files are the same"
    for path in paths:
        if path.suffix == ".json":
            text = path.read_text()
            assert "samples_s" not in text, f"{path.name} keeps raw samples"
            document = json.loads(text)
            assert "results" not in str(document.get("benchmarks", {}).keys())
            for entry in document.get("benchmarks", {}).values():
                # The combined file points at each module's file, no copy.
                assert "results" not in entry and entry["json"].endswith(".json")


def test_run_smoke_writes_combined_results_and_prints_the_table(tmp_path):
    command = [
        sys.executable,
        str(BENCHMARKS / "run.py"),
        "--smoke",
        "--only",
        "autodiff",
        "--out-dir",
        str(tmp_path),
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=BENCHMARKS.parent
    )
    assert out.returncode == 0, out.stderr[-4000:]

    # The module's own files and the combined file, all under --out-dir.
    assert len(list(tmp_path.glob("autodiff-*-smoke.json"))) == 1
    assert len(list(tmp_path.glob("autodiff-*-smoke.png"))) == 1
    combined = [
        p for p in tmp_path.glob("*-smoke.json") if not p.name.startswith("autodiff")
    ]
    assert len(combined) == 1
    document = json.loads(combined[0].read_text())
    assert document["mode"] == "smoke"
    assert list(document["benchmarks"]) == ["autodiff"]
    assert "backend" in document["machine"]

    result = document["benchmarks"]["autodiff"]
    assert "error" not in result
    # The combined file holds the headline rows and points at the module's
    # own file, which holds its results.
    assert "results" not in result
    assert result["png"] == Path(result["json"]).with_suffix(".png").name
    module = json.loads((tmp_path / result["json"]).read_text())
    assert "samples_s" not in json.dumps(module)
    rows = result["headline"]
    # Two gradient rows per parameter count, one per Jacobian shape.
    assert len(rows) == 2 * len(module["gradients"]) + 2
    for row in rows:
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0
        assert row["q1"] <= row["ratio"] <= row["q3"]
    # Autodiff is exact to rounding, finite differences are not.
    for gradient in module["gradients"]:
        errors = gradient["max_rel_error"]
        assert errors["grad"] < 1e-12 < errors["fd"] < 1e-4
        assert gradient["times"]["grad"]["n"] >= 1

    assert "# Headline (smoke run)" in out.stdout
    assert "| autodiff" in out.stdout
    assert "targets met" in out.stdout

    # --replot redraws the PNG from the stored JSON and runs nothing.
    png = tmp_path / result["png"]
    png.unlink()
    replot = subprocess.run(
        [*command, "--replot"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=BENCHMARKS.parent,
    )
    assert replot.returncode == 0, replot.stderr[-4000:]
    assert png.exists()
