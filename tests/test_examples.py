"""Every example runs in its fast mode, prints its result and writes its plot.

The examples are found with a glob, so a new script in ``examples/`` is run
too: it fails here until its fast-mode flags and the pattern of the result it
prints are added to ``FAST``. Each example takes ``--out PATH`` for its PNG;
the tests write them to a temporary directory, not next to the scripts.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).parents[1] / "examples"
SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py"))

# script -> (fast-mode flags, regexes its printed result must match)
FAST = {
    "quickstart.py": (
        ["--points", "65536", "--epochs", "3", "--batch-size", "256", "--no-progress"],
        [r"final batch loss \d"],
    ),
    "curve_fit_uncertainty.py": (
        ["--points", "80"],
        [r"(?m)^tau\s+3\.0000\s+\d+\.\d+ ±\s+\d+\.\d+", r"\d of 5 parameters within"],
    ),
    "flax_mlp_linesearch.py": (
        ["--steps", "30", "--points", "64"],
        [r"(?m)^lbfgs\s+\d+\.\d+\s+\d+"],
    ),
    "out_of_core.py": (
        ["--rows", "65536", "--batch-size", "256", "--budget-kib", "128"],
        [r"bit for bit: params True, loss history True"],
    ),
    "many_fits_vmap.py": (
        ["--fits", "200", "--scipy-fits", "20"],
        [
            r"converged: 200 of 200",
            r"median relative error: a \d",
            r"least_squares_solve_many: .* 200 converged",
        ],
    ),
    "rosenbrock.py": (
        ["--steps", "300", "--dims", "2"],
        [r"(?m)^\s+2 jaxfit lbfgs \(zoom\)\s+\d+\s+\d+\s+\S+"],
    ),
}


@pytest.fixture(scope="module")
def run_example(tmp_path_factory):
    """Runs an example once per test session: ``name -> (process, png)``."""
    out_dir = tmp_path_factory.mktemp("examples")
    runs = {}

    def run(name):
        if name not in runs:
            flags, _ = FAST[name]
            png = out_dir / name.replace(".py", ".png")
            process = subprocess.run(
                [sys.executable, str(EXAMPLES / name), *flags, "--out", str(png)],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=out_dir,
                env={**os.environ, "MPLBACKEND": "Agg"},
            )
            runs[name] = process, png
        return runs[name]

    return run


def test_the_glob_finds_the_examples():
    assert "quickstart.py" in SCRIPTS and len(SCRIPTS) >= 6


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_prints_its_result_and_writes_its_plot(name, run_example):
    assert name in FAST, (
        f"examples/{name} has no fast mode here: add its flags and the "
        "pattern of its printed result to FAST in tests/test_examples.py"
    )
    source = (EXAMPLES / name).read_text()
    tree = ast.parse(source)
    assert ast.get_docstring(tree), f"{name} needs a module docstring"
    private = [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and re.match(r"jaxfit\.(_|transforms|step|streaming|data)", node.module)
    ]
    assert not private, f"{name} imports from non-public modules {private}"

    process, png = run_example(name)
    assert process.returncode == 0, (
        f"{name} exited with {process.returncode}:\n{process.stderr[-4000:]}"
    )
    for pattern in FAST[name][1]:
        assert re.search(pattern, process.stdout), (
            f"{name} did not print its result ({pattern!r}):\n{process.stdout}"
        )
    assert f"plot written to {png}" in process.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quickstart_recovers_the_true_parameters(run_example):
    process, _ = run_example("quickstart.py")
    assert process.returncode == 0, process.stderr[-4000:]
    rows = {
        line.split()[0]: [float(v) for v in line.split()[1:]]
        for line in process.stdout.splitlines()
        if line.split() and line.split()[0] in ("amplitude", "rate", "offset")
    }
    assert set(rows) == {"amplitude", "rate", "offset"}
    for true, *fitted in rows.values():  # one column per chain
        assert len(fitted) == 2
        for value in fitted:
            assert abs(value - true) < 0.05 * abs(true) + 0.02
