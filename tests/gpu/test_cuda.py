"""The CUDA code paths on a real GPU (issues #3 and #4). Every test here is skipped without one.

On a GPU machine: ``python -m pytest -m gpu tests/gpu`` (``benchmarks/gpu_session.sh`` runs these
and the GPU benchmarks in one go). ``SYNTHGATE_GPU_DRY_RUN=1`` runs them on the CPU instead, to
check the tests themselves; the CUDA-only assertions (bf16, channels_last, compile, data on the
GPU, CUDA-vs-CPU agreement) are then skipped, so a dry run proves nothing about CUDA.

What they check, beyond the CPU suite: training with bf16 autocast, channels_last, ``torch.compile``,
fused AdamW and the data held on the GPU (diffusion and GAN); checkpoints written from the GPU load
on a CPU; resume on the GPU continues the same run; the samplers are reproducible on the GPU and
agree with the CPU in fp32; the memorization scan (bf16 matmul on the GPU, re-scored in fp32) agrees
with the CPU's and finds planted copies; the evaluation stage and FID early stopping run on the GPU; DDP over
NCCL with two GPUs keeps the ranks identical (skipped with fewer).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import synthgate.generators.train as T
from synthgate.data.canonical import load_dataset, metadata_for, write_dataset
from synthgate.evaluation.config import EncoderConfig, EvaluateConfig, MemorizationConfig, UtilityConfig
from synthgate.evaluation.memorization import cosine_nn, dihedral, pixel_nn
from synthgate.generators.config import SampleConfig
from synthgate.generators.diffusion import sample_images
from synthgate.generators.model import load_generator
from synthgate.generators.train import list_checkpoints, read_checkpoint, train
from tests.unit.generators_helpers import make_dataset, quick, tiny

pytestmark = pytest.mark.gpu


@pytest.fixture
def dev() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def fp32():
    """Exact fp32 on the GPU: no TF32 in convolutions and matmuls, deterministic cuDNN algorithms."""
    cudnn = torch.backends.cudnn
    before = (torch.get_float32_matmul_precision(), cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark)
    torch.set_float32_matmul_precision("highest")
    cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark = False, True, False
    yield
    torch.set_float32_matmul_precision(before[0])
    cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark = before[1:]


@pytest.fixture
def spy(monkeypatch):
    """Keeps the training task and data feed that ``train`` builds (test-only hooks)."""
    seen: dict[str, object] = {}
    real_build, real_feed = T.build_task, T.Feed

    def build_task(*args, **kwargs):
        seen["task"] = real_build(*args, **kwargs)
        return seen["task"]

    class Feed(real_feed):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["feed"] = self

    monkeypatch.setattr(T, "build_task", build_task)
    monkeypatch.setattr(T, "Feed", Feed)
    return seen


def _conv_weight(module: torch.nn.Module) -> torch.Tensor:
    return next(p for p in module.parameters() if p.dim() == 4)


def _check_model_on_cpu(run, n_classes=2, res=16, sampler="ddim"):
    gen = load_generator(run / "model", "cpu")
    images = gen.sample(np.arange(n_classes), SampleConfig(sampler=sampler, steps=2, per_class=1))
    assert images.shape == (n_classes, res, res, 1) and images.dtype == np.uint8
    ckpt = read_checkpoint(list_checkpoints(run)[-1], "cpu")  # written from the GPU, read without one
    tensors = [t for m in ckpt["task"]["modules"].values() for t in m.values()]
    assert tensors and all(t.device.type == "cpu" and t.isfinite().all() for t in tensors)


def test_diffusion_trains_with_bf16_channels_last_compile_and_data_on_the_gpu(tmp_path, dev, spy):
    ds = make_dataset(tmp_path / "ds", {"lung": 24, "bone": 24})
    cfg = quick(device=dev.type, steps=6, batch_size=8, checkpoint_every=3, log_every=3, bf16=True, compile=True,
                data_on_gpu="always")
    r = train(ds.root, tiny(), cfg, tmp_path / "run")
    assert r.steps == 6 and math.isfinite(r.final_loss) and r.images_per_second > 0
    assert [c.name for c in list_checkpoints(tmp_path / "run")] == ["step_00000003.pt", "step_00000006.pt"]
    task, feed = spy["task"], spy["feed"]
    if dev.type == "cuda":
        assert task.amp and task.memory_format == torch.channels_last
        assert isinstance(task.forward, torch._dynamo.eval_frame.OptimizedModule)
        assert _conv_weight(task.unet).is_contiguous(memory_format=torch.channels_last)
        assert task.opt.defaults["fused"] is True
        assert feed.images.device.type == "cuda" and feed.labels.device.type == "cuda"
        x, y = feed.batch(0)
        assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32
    _check_model_on_cpu(tmp_path / "run")


def test_gan_trains_with_bf16_channels_last_and_a_compiled_generator(tmp_path, dev, spy):
    ds = make_dataset(tmp_path / "ds", {"lung": 24, "bone": 24})
    cfg = quick(device=dev.type, steps=4, batch_size=8, checkpoint_every=2, log_every=2, bf16=True, compile=True)
    r = train(ds.root, tiny("gan", n_critic=2), cfg, tmp_path / "run")
    assert r.steps == 4 and math.isfinite(r.final_loss)
    task = spy["task"]
    if dev.type == "cuda":
        assert task.amp and isinstance(task.g_forward, torch._dynamo.eval_frame.OptimizedModule)
        assert _conv_weight(task.d).is_contiguous(memory_format=torch.channels_last)
        assert task.opt_g.defaults["fused"] is True and task.opt_d.defaults["fused"] is True
    _check_model_on_cpu(tmp_path / "run")


def _states(run, step):
    ckpt = read_checkpoint(run / "checkpoints" / f"step_{step:08d}.pt", "cpu")
    out = {f"{m}.{k}": t for m, sd in ckpt["task"]["modules"].items() for k, t in sd.items()}
    out |= {f"ema.{i}": t for i, t in enumerate(ckpt["task"]["ema"]["shadow_params"])}
    return out


def test_resume_on_the_gpu_continues_the_same_run(tmp_path, dev, fp32):
    ds = make_dataset(tmp_path / "ds", {"lung": 24, "bone": 24})
    cfg = dict(device=dev.type, batch_size=8, checkpoint_every=2, log_every=2, bf16=False)
    train(ds.root, tiny(), quick(steps=4, **cfg), tmp_path / "full")
    train(ds.root, tiny(), quick(steps=2, **cfg), tmp_path / "split")
    resumed = train(ds.root, tiny(), quick(steps=4, **cfg), tmp_path / "split")
    assert resumed.resumed_from == 2 and resumed.steps == 4
    a, b = _states(tmp_path / "full", 4), _states(tmp_path / "split", 4)
    assert a.keys() == b.keys() and len(a) > 10
    # The same optimiser, EMA and noise streams: weights agree up to GPU summation order. A lost
    # optimiser state or RNG stream would move (nearly) every weight by about the learning rate.
    flat_a = torch.cat([t.float().flatten() for t in a.values()])
    flat_b = torch.cat([t.float().flatten() for t in b.values()])
    off = ((flat_a - flat_b).abs() > 1e-6 + 1e-4 * flat_a.abs()).float().mean().item()
    assert off < 1e-3, f"{off:.2%} of the weights differ after resuming"


def _trained_on_cpu(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"lung": 12, "bone": 12})
    train(ds.root, tiny(), quick(steps=2, batch_size=4), tmp_path / "run")
    return tmp_path / "run" / "model"


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
def test_samplers_are_reproducible_on_the_gpu_and_agree_with_the_cpu(tmp_path, dev, fp32, sampler):
    model = _trained_on_cpu(tmp_path)
    gpu, cpu = load_generator(model, dev), load_generator(model, "cpu")
    labels = np.array([0, 1, 0, 1, 1, 0])
    cfg = SampleConfig(sampler=sampler, steps=4, per_class=1, guidance_scale=2.0, batch_size=4, seed=7)
    a, b = gpu.sample(labels, cfg), gpu.sample(labels, cfg)  # bf16 autocast on the GPU
    assert a.shape == (6, 16, 16, 1) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, gpu.sample(labels, cfg.model_copy(update={"seed": 8})))
    if sampler == "ddpm":
        return  # its per-step noise comes from a generator on the device: CPU and GPU streams differ
    # fp32 on the GPU against the CPU: the same starting noise (drawn on the CPU), the same model
    exact = sample_images(gpu.module, gpu.context, labels, cfg, null_class=2, device=dev, amp=False)
    ref = cpu.sample(labels, cfg)
    diff = np.abs(exact.astype(int) - ref.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())


def test_sample_stage_on_the_gpu_writes_a_canonical_dataset(tmp_path, dev):
    from synthgate.generators.sample import sample

    model = _trained_on_cpu(tmp_path)
    out = sample(model, SampleConfig(sampler="dpmsolver++", steps=3, per_class=5, device=dev.type), tmp_path / "s")
    ds = load_dataset(out.root)
    assert len(ds.labels()) == 10 and ds.classes == ["lung", "bone"] and ds.resolution == 16
    assert np.bincount(ds.labels()).tolist() == [5, 5]


def _smooth(n, res, seed):
    from tests.unit.generators_helpers import smooth_images

    return smooth_images(n, res, 1, seed)


def test_memorization_scan_on_the_gpu_agrees_with_the_cpu_and_finds_planted_copies(dev):
    ref = _smooth(400, 32, seed=1)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(ref), 24, replace=False)
    ways = rng.integers(0, 8, 24)
    copies = []
    for i, w in zip(picks, ways, strict=True):
        x = torch.from_numpy(ref[i][None]).permute(0, 3, 1, 2)
        copies.append(dihedral(x)[w].permute(0, 2, 3, 1).numpy()[0])
    queries = np.concatenate([np.stack(copies), _smooth(40, 32, seed=2)])
    on_gpu = pixel_nn(queries, ref, dev, chunk=16)
    on_cpu = pixel_nn(queries, ref, torch.device("cpu"), chunk=16)
    # planted copies (any of the 8 rotations/flips) are found on both, with the right source image
    assert (on_cpu.best[:24] > 0.999).all() and (on_cpu.index[:24] == picks).all()
    # the GPU's bf16 scan, its best candidates re-scored in fp32: the CPU's fp32 answer
    np.testing.assert_allclose(on_gpu.best, on_cpu.best, atol=1e-4)
    np.testing.assert_allclose(on_gpu.second, on_cpu.second, atol=1e-4)
    np.testing.assert_array_equal(on_gpu.index, on_cpu.index)
    np.testing.assert_array_equal(on_gpu.transform, on_cpu.transform)
    feats = rng.standard_normal((500, 64)).astype(np.float32)
    q = np.concatenate([feats[:10] * 3.0, rng.standard_normal((30, 64)).astype(np.float32)])
    f_gpu, f_cpu = cosine_nn(q, feats, dev, chunk=16), cosine_nn(q, feats, torch.device("cpu"), chunk=16)
    np.testing.assert_allclose(f_gpu.best, f_cpu.best, atol=1e-5)
    np.testing.assert_array_equal(f_gpu.index, f_cpu.index)
    assert (f_gpu.best[:10] > 0.9999).all() and (f_gpu.index[:10] == np.arange(10)).all()


def _separable(root, n_per_class=60, res=16):
    """Two classes a small classifier can tell apart: bright and dark smooth images."""
    imgs = _smooth(2 * n_per_class, res, seed=5).astype(np.float32)
    imgs[:n_per_class] = 128 + imgs[:n_per_class] / 2
    imgs[n_per_class:] = imgs[n_per_class:] / 2
    labels = np.repeat([0, 1], n_per_class)
    split = np.array(["train", "train", "val", "test", "train"] * (2 * n_per_class // 5))
    meta = metadata_for(imgs.astype(np.uint8), labels, ["bright", "dark"], "train",
                        [f"test:{i}" for i in range(len(labels))])
    meta["split"] = split
    return write_dataset(root, imgs.astype(np.uint8), meta, ["bright", "dark"], stage="test", config={}, inputs=[])


def test_evaluation_runs_on_the_gpu_and_catches_replayed_training_images(tmp_path, dev):
    from synthgate.evaluation.evaluate import evaluate

    real = _separable(tmp_path / "real")
    tr = real.split_indices("train")
    replay = np.asarray(real.images[tr])  # a "generator" that replays its training images
    meta = metadata_for(replay, real.labels()[tr], real.classes, "train", [f"synthetic:{i}" for i in range(len(tr))])
    syn = write_dataset(tmp_path / "syn", replay, meta, real.classes, stage="sample", config={}, inputs=[],
                        extra={"synthetic": True})
    cfg = EvaluateConfig(device=dev.type, encoder=EncoderConfig(epochs=3, batch_size=32, cache_dir=tmp_path / "enc"),
                         memorization=MemorizationConfig(planted=10, chunk=32, descriptor={"steps": 20, "batch_size": 32, "cache_dir": tmp_path / "enc"}),
                         utility=UtilityConfig(epochs=2, batch_size=32, seeds=[0, 1, 2]))
    r = evaluate(real.root, syn.root, cfg, tmp_path / "eval")
    s = r.data["summary"]
    assert s["flagged_copies"] >= 0.95 * len(tr) and s["membership_auc_pixel"] > 0.9 and s["membership_auc"] > 0.9
    assert r.data["encoder"]["encoder_id"].startswith("small-") and r.data["encoder"]["val_auroc"] > 0.9
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["evaluation_hash"] == r.data["evaluation_hash"]
    assert (tmp_path / "eval" / "report.html").stat().st_size > 50_000


def test_fid_early_stopping_on_the_gpu(tmp_path, dev):
    ds = make_dataset(tmp_path / "ds", {"lung": 24, "bone": 24})
    enc = EncoderConfig(arch="small", epochs=1, batch_size=8, cache_dir=tmp_path / "encoders")
    r = train(ds.root, tiny(), quick(device=dev.type, steps=4, batch_size=8, fid_every=2, fid_images=16),
              tmp_path / "o", encoder=enc,
              fid_sampling=SampleConfig(sampler="ddim", steps=2, per_class=1, guidance_scale=1.0))
    assert [s for s, _ in r.fid["history"]] == [2, 4]
    assert all(math.isfinite(v) and v >= 0 for _, v in r.fid["history"])
    info = json.loads((tmp_path / "o" / "model" / "synthgate_generator.json").read_text())
    assert info["selection"]["by"] == "fid" and info["selection"]["step"] == r.fid["best_step"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_over_nccl_on_two_gpus_keeps_the_ranks_identical(tmp_path):
    from tests.unit.test_distributed import assert_same_state, params_file, rank_states, torchrun

    ds = make_dataset(tmp_path / "ds", {"lung": 24, "bone": 24})
    p = params_file(tmp_path / "params.yaml", "diffusion", device="cuda", batch_size=8, bf16=True)
    log = torchrun(tmp_path, [["ddp", ["train", "--params", p, "--dataset", str(ds.root), "--out", "ddp"]]],
                   timeout=600)
    assert "world size 2 (nccl, cuda)" in log and "global batch 16" in log
    states = rank_states(tmp_path, "ddp")
    assert states[0]["losses"][0] != states[1]["losses"][0]
    assert_same_state(states[0]["state"], states[1]["state"])
