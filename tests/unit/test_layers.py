"""The layering of docs/ARCHITECTURE.md holds (import-linter's contracts in pyproject.toml: a
package imports only those below it; the infrastructure modules import no stage, shell or
Kubeflow code), and what `make lint` type-checks passes mypy."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a dev dependency (pyproject.toml)"
    r = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(REPO / "src"),
                            "HOME": str(REPO)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 kept, 0 broken" in r.stdout


def test_the_stage_functions_configuration_gates_and_kubeflow_glue_type_check(tmp_path):
    """mypy (with pydantic's plugin, [tool.mypy] in pyproject.toml) on what `make lint` checks."""
    import re

    targets = re.search(r"^MYPY_TARGETS := (.+)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
    assert {"src/synthgate/gates", "src/synthgate/kubeflow", "src/synthgate/cli", "components"} <= set(targets)
    r = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), *targets], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success: no issues found" in r.stdout


def test_no_function_over_100_lines_and_no_module_over_450():
    """The size limits of docs/ARCHITECTURE.md: a function that grows past 100 lines is split into
    parts, a module past 450 into modules (each with one concern)."""
    import ast

    src = Path(__file__).resolve().parents[2] / "src" / "synthgate"
    long_functions, long_modules = [], []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 450:
            long_modules.append(f"{path.relative_to(src)} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 100:
                    long_functions.append(f"{path.relative_to(src)}::{node.name} ({n} lines)")
    assert not long_functions, long_functions
    assert not long_modules, long_modules


def test_stage_arguments_after_the_first_are_keyword_only():
    """Every stage names what it is passed (docs/ARCHITECTURE.md): only the configuration or the thing
    acted on (and ``promote``'s version) is positional, so a reordered signature cannot swap two paths
    in a shell that calls it. mypy (above) checks each call site in the CLI and the components."""
    import inspect

    import synthgate.stages as stages

    positional_ok = {"promote": 2, "gate": 0, "register": 0}
    checked = []
    for name, fn in vars(stages).items():
        if not inspect.isfunction(fn) or name.startswith("_") or fn.__module__ != stages.__name__:
            continue
        kinds = [p.kind for p in inspect.signature(fn).parameters.values()]
        positional = sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in kinds)
        assert positional <= positional_ok.get(name, 1), f"stages.{name}: {positional} positional parameters"
        checked.append(name)
    assert {"prepare", "validate", "train", "sample", "evaluate", "gate", "register", "publish", "pull"} <= set(checked)
