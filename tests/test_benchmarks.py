"""benchmarks/run.py keeps working: every module registered, a smoke run."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
NOT_BENCHMARKS = {"_harness", "run"}


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
        assert "benchmark" in functions, f"{name}.py has no benchmark(mode)"
        assert "main" in functions, f"{name}.py has no main()"


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
    rows = result["headline"]
    # Two gradient rows per parameter count, one per Jacobian shape.
    assert len(rows) == 2 * len(result["results"]["gradients"]) + 2
    for row in rows:
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0
        assert row["q1"] <= row["ratio"] <= row["q3"]
    # Autodiff is exact to rounding, finite differences are not.
    for gradient in result["results"]["gradients"]:
        errors = gradient["max_rel_error"]
        assert errors["grad"] < 1e-12 < errors["fd"] < 1e-4

    assert "# Headline (smoke run)" in out.stdout
    assert "| autodiff" in out.stdout
    assert "targets met" in out.stdout
