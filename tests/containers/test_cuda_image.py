"""The CUDA image (docker/Dockerfile.cuda) as its users run it, here without a GPU: the pinned stack on
a CUDA torch, standard Inception-FID (torch-fidelity, which the CPU image cannot have), and the
project's pipeline with every step a container of this image.

``make test-containers-cuda`` runs them (SYNTHGATE_CUDA_IMAGE_TESTS=1; the first build downloads
~5 GB of CUDA wheels); ``make test`` and ``make test-containers`` skip them.
"""

# no `from __future__ import annotations`: kfp reads the component annotations as types
import json
import subprocess
import textwrap

import pytest

from tests.containers.conftest import VERSION, run_in
from tests.containers.conftest import open_for_image as _open
from tests.helpers import REPO, make_folder

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3600)]


def test_cuda_stack(engine, cuda_image):
    code = textwrap.dedent("""
        import importlib.util, json, site, sys, torch, torchvision, diffusers, mlflow, kfp, monai, synthgate
        import torch_fidelity.feature_extractor_inceptionv3
        from diffusers import UNet2DModel
        boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.]])
        keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)  # a torchvision built for this torch
        print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                          "cuda_available": torch.cuda.is_available(), "torchvision": torchvision.__version__,
                          "nms": keep.tolist(), "kfp": kfp.__version__, "synthgate": synthgate.__version__,
                          "torch_file": torch.__file__, "python": sys.executable}))
    """)
    r = run_in(engine, cuda_image, "python3", "-c", code)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    pins = dict(line.split("==") for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert info["torch"].split("+")[0] == pins["torch"] and info["cuda"], info  # the pinned torch, a CUDA build
    assert info["cudnn"] and info["cuda_available"] is False  # no GPU on this machine: runs on CPU
    assert info["nms"] == [0] and info["kfp"] == pins["kfp"] and info["synthgate"] == VERSION
    assert info["python"] == "/opt/venv/bin/python3"
    assert not info["torch_file"].startswith("/opt/venv/")  # the base's torch, never replaced in the venv
    r = run_in(engine, cuda_image, "sh", "-c", "id -u; pwd; synthgate --help >/dev/null && echo cli-ok")
    assert r.returncode == 0 and r.stdout.split() == ["1000", "/work", "cli-ok"], r.stdout + r.stderr


_INCEPTION = r"""
import json, sys
from types import SimpleNamespace
import numpy as np, torch
import torch_fidelity.feature_extractor_inceptionv3 as fe
from torchmetrics.image.fid import NoTrainInceptionV3
from synthgate.evaluation.evaluate import _inception_fid

out = sys.argv[1]
# No FID Inception weights can be downloaded here: a randomly initialised network of the same
# architecture, saved as a state dict, stands in for pt_inception-2015-12-05-6726825d.pth.
class RandomInit(fe.FeatureExtractorInceptionV3):
    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None
fe.load_state_dict_from_url = lambda *a, **k: {}
torch.manual_seed(0)
torch.save(RandomInit("inception-v3-compat", ["2048"]).state_dict(), f"{out}/inception.pth")
path = f"{out}/inception.pth"

rng = np.random.default_rng(0)
def blobs(n):  # smooth 32x32 grey images
    low = rng.random((n, 4, 4)) * 255
    return np.kron(low, np.ones((8, 8)))[..., None].astype(np.uint8)
real = blobs(120)
ref, test = np.arange(80), np.arange(80, 120)
close, noise = blobs(60), rng.integers(0, 256, (60, 32, 32, 1), dtype=np.uint8)
ours_close = _inception_fid(SimpleNamespace(images=real), ref, close, path, test)
ours_noise = _inception_fid(SimpleNamespace(images=real), ref, noise, path)

# independent: torchmetrics' feature extractor on the same weights, Frechet distance in numpy
net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=path)
def feats(x):
    t = torch.from_numpy(x).permute(0, 3, 1, 2).expand(-1, 3, -1, -1).contiguous()
    with torch.no_grad():
        return net(t).double().numpy()
def frechet(a, b):
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    tr = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)
fr = feats(real[ref])
print(json.dumps({"close": ours_close, "noise": ours_noise, "ref_close": frechet(fr, feats(close)),
                  "ref_noise": frechet(fr, feats(noise)), "ref_test": frechet(fr, feats(real[test]))}))
"""


def test_inception_fid_in_the_cuda_image(engine, cuda_image, tmp_path):
    work = _open(tmp_path / "work")
    (work / "inception_check.py").write_text(_INCEPTION)
    r = run_in(engine, cuda_image, "python3", "/data/inception_check.py", "/data", volumes={work: "/data"}, timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    v = json.loads(r.stdout.strip().splitlines()[-1])
    close, noise = v["close"], v["noise"]
    assert close["fid"] == pytest.approx(v["ref_close"], rel=1e-3)
    assert noise["fid"] == pytest.approx(v["ref_noise"], rel=1e-3)
    assert close["real_test_vs_train"] == pytest.approx(v["ref_test"], rel=1e-3)
    assert close["fid"] < noise["fid"]  # even random Inception features separate blobs from noise
    assert close["n_real"] == 80 and close["n_synthetic"] == 60 and len(close["weights_sha256"]) == 64
    assert close["weights"] == "/data/inception.pth"


def test_evaluate_reports_inception_fid(engine, cuda_image, tmp_path):
    """`synthgate evaluate` with evaluate.inception_weights, in the CUDA image: the score, its
    baseline and the weights' identity land in evaluation.json and report.html."""
    from synthgate.config import PrepareConfig, SourceConfig
    from synthgate.data.prepare import prepare
    from synthgate.evaluation.evaluate import make_standin

    work = _open(tmp_path / "work")
    (work / "inception_check.py").write_text(_INCEPTION)
    r = run_in(engine, cuda_image, "python3", "/data/inception_check.py", "/data", volumes={work: "/data"}, timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]  # writes /data/inception.pth
    raw = make_folder(tmp_path / "raw", {"a": 60, "b": 60}, mixed=False)
    prepare(SourceConfig(type="folder", path=raw), PrepareConfig(resolution=16, split={"val": 0.15, "test": 0.3, "seed": 0}),
            tmp_path / "prepared")
    make_standin(tmp_path / "prepared", work / "real", work / "standin")
    (work / "params.yaml").write_text(textwrap.dedent("""
        evaluate:
          device: cpu
          inception_weights: /data/inception.pth
          encoder: {epochs: 1, batch_size: 32, cache_dir: /data/encoders}
          memorization: {planted: 10, chunk: 64}
          utility: {enabled: false}
    """))
    subprocess.run(["chmod", "-R", "a+rwX", str(work)], check=True)
    r = run_in(engine, cuda_image, "synthgate", "evaluate", "--params", "/data/params.yaml", "--real", "/data/real",
               "--synthetic", "/data/standin", "--out", "/data/e", volumes={work: "/data"}, workdir="/data", timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    inc = json.loads((work / "e" / "evaluation.json").read_text())["fidelity"]["inception_fid"]
    assert inc["fid"] >= 0 and inc["real_test_vs_train"] >= 0 and inc["weights"] == "/data/inception.pth"
    html = (work / "e" / "report.html").read_text()
    assert "Standard Inception-FID" in html and inc["weights_sha256"][:16] in html


def test_synthesis_pipeline_in_the_cuda_image(engine, cuda_image, docker_host, mlflow_server, tmp_path):
    """The whole CPU pipeline (kfp.local DockerRunner) with every step a container of the CUDA image."""
    from tests.containers.test_image import run_synthesis_in_containers

    log = run_synthesis_in_containers(cuda_image, docker_host, mlflow_server, tmp_path)
    assert cuda_image in log  # the tasks ran in the CUDA image
