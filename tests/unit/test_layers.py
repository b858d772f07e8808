"""The layering of docs/ARCHITECTURE.md holds: import-linter's contracts in pyproject.toml (a
package imports only those below it; the infrastructure modules import no stage, shell or
Kubeflow code)."""

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
