"""The benchmarks still run (tiny settings, CPU): they are measured on a GPU, not timed here."""

import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script,args", [
    ("train_throughput.py", ["--size", "tiny", "--resolution", "16", "--channels", "1", "--classes", "2",
                             "--batch", "8", "--steps", "2", "--warmup", "1"]),
    ("sample_throughput.py", ["--n", "4", "--size", "tiny", "--resolution", "16", "--channels", "1",
                              "--classes", "2", "--batch", "4", "--fast-steps", "3"]),
    ("publish_throughput.py", ["--n", "60", "--size", "16", "--workers", "4"]),
    ("pull_verification.py", ["--n", "60", "--size", "16", "--repeats", "1", "--workers", "4"]),
    ("memorization_scan.py", ["--queries", "20", "--reference", "200", "--size", "16", "--chunk", "8"]),
    ("copy_search_speed.py", ["--queries", "20", "--train", "200", "--size", "32", "--images", "none"]),
])
def test_benchmark_runs(script, args):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ratio" in proc.stdout
