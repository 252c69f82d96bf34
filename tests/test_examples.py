"""Every example runs and prints its result."""

from __future__ import annotations

import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).parents[1] / "examples"


def test_quickstart_recovers_the_true_parameters():
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "quickstart.py"),
            "--points",
            "65536",
            "--epochs",
            "3",
            "--batch-size",
            "256",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    rows = {
        line.split()[0]: [float(v) for v in line.split()[1:]]
        for line in out.splitlines()
        if line.split() and line.split()[0] in ("amplitude", "rate", "offset")
    }
    assert set(rows) == {"amplitude", "rate", "offset"}
    for true, *fitted in rows.values():  # one column per chain
        assert len(fitted) == 2
        for value in fitted:
            assert abs(value - true) < 0.05 * abs(true) + 0.02
    assert (EXAMPLES / "quickstart.png").exists()
