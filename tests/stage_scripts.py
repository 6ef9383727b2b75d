"""The one way tests reach a stage script: load it by path and call its `main(argv)` in-process.

Stage scripts are files run as `python <stage>/<script>.py`, not an importable package; tests call
their `main` to check what a user sees (the one-line errors, the exit codes). Defaults and logic
live in the library, so nothing else in a script is for tests to import.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """The module of a stage script, e.g. `load_script("training/sft.py")`."""
    path = ROOT / relative_path
    name = "stage_" + relative_path.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(relative_path: str, *argv: str) -> int:
    """Run a stage script's main with these arguments; returns its exit status."""
    return load_script(relative_path).main([str(arg) for arg in argv])
