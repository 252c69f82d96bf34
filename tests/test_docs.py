"""The Sphinx docs build without warnings and list every public name."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import jaxfit
import jaxfit.flax

DOCS = Path(__file__).resolve().parent.parent / "docs"
API = DOCS / "api.rst"


def _autosummary_entries(text: str) -> set[str]:
    """The names listed in the ``autosummary`` directives of an RST file."""
    names = set()
    for block in re.split(r"^\.\. autosummary::\n", text, flags=re.M)[1:]:
        for line in block.splitlines():
            if line and not line.startswith(" "):
                break  # the directive's indented body has ended
            entry = line.strip()
            if entry and not entry.startswith(":"):
                names.add(entry)
    return names


def test_api_reference_lists_every_public_name():
    listed = _autosummary_entries(API.read_text())
    missing = sorted(set(jaxfit.__all__) - listed)
    assert not missing, f"add these names of jaxfit.__all__ to docs/api.rst: {missing}"


def test_api_reference_lists_every_flax_helper():
    public = {
        name
        for name, obj in vars(jaxfit.flax).items()
        if not name.startswith("_")
        and inspect.isfunction(obj)
        and obj.__module__ == "jaxfit.flax"
    }
    assert public >= {"apply_gradients", "nnx_value_fn"}
    missing = sorted(public - _autosummary_entries(API.read_text()))
    assert not missing, f"add these jaxfit.flax names to docs/api.rst: {missing}"


def test_docs_build_without_warnings(tmp_path):
    # The `test` extra installs the docs tools: missing ones are a broken
    # install, which must fail CI rather than skip the build.
    for module in ("sphinx", "myst_parser"):
        assert importlib.util.find_spec(module) is not None, (
            f"{module} is not installed: the docs build needs "
            '`pip install -e ".[docs]"` (the `test` extra includes it)'
        )
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",  # warnings are errors
        "--keep-going",  # report all of them, not only the first
        "-q",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),
        str(DOCS),
        str(tmp_path / "html"),
    ]
    # Docs only import jaxfit; keep JAX off accelerators and quiet.
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, check=False
    )
    assert done.returncode == 0, (
        f"`{' '.join(command)}` failed:\n{done.stdout}\n{done.stderr}"
    )
    for page in ("index", "api", "curve_fit", "performance", "generated/jaxfit.fit"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page


def test_the_readme_one_screen_example_runs():
    """README's "In one screen": the chain, a streamed fit and curve_fit."""
    text = (DOCS.parent / "README.md").read_text()
    screen = text.split("## In one screen", 1)[1].split("\n## ", 1)[0]
    code = "\n".join(
        block.split("```", 1)[0] for block in screen.split("```python\n")[1:]
    )
    assert "jaxfit.fit(" in code and "jaxfit.curve_fit(" in code
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["result"].epochs == 2
    popt = namespace["popt"]
    assert abs(popt[0] - 2.5) < 1e-2 and abs(popt[1] - 1.3) < 1e-2
    params = namespace["result"].params
    assert abs(float(params["a"]) - 1.0) > 0.1  # the fit moved the params
