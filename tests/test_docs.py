"""Every hook is documented and exercised; the README's commands are the ones CI runs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from embench import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if name.startswith("register_")]


def test_there_are_hooks():
    assert HOOKS == ["register_encoders", "register_tasks"]


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    assert f"def {hook}(register)" in (ROOT / "CONTRIBUTING.md").read_text()
    assert getattr(hookspecs, hook).__doc__


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_tested(hook):
    uses = [p.name for p in (ROOT / "tests").glob("test_*.py")
            if p.name != "test_docs.py" and f"def {hook}(" in p.read_text()]
    assert uses, f"no test registers a plugin implementing {hook}"


def _readme_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_gives_two_commands_and_ci_runs_them():
    install_and_run, test = [b.strip() for b in _readme_blocks()[:2]]
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_and_run.endswith("embench run") and "torch==2.13.0" in install_and_run
    assert test == "python -m pytest"
    assert re.search(r"^python -m pytest$", ci, flags=re.M), "CI must run the README test command"
    assert "torch==2.13.0" in ci and "embench run" in ci
