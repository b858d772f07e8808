#!/usr/bin/env bash
# The GPU checks of issues #3 and #4 in a few calls of the device tool (30 minutes of device time,
# 10 minutes a call). Build the kit here first (`make gpu-kit`), then on the GPU machine:
#
#   run(command="bash benchmarks/gpu_session.sh tests bench", carry=[".whl", ".gpu"])     # ~8 min
#   run(command="bash benchmarks/gpu_session.sh base", carry=[".whl", ".gpu"])            # ~9 min
#   run(command="bash benchmarks/gpu_session.sh matched evaluate", carry=[".whl", ".gpu"]) # ~6 min
#
# Phases (any order; each writes <phase>.log, and some a JSON, under $OUT):
#   tests     pytest -m gpu tests/gpu (the CUDA code paths; tests/gpu/test_cuda.py)
#   bench     train_throughput (plain compiled diffusers loop vs synthgate, 35.8M UNet, batch 256),
#             memorization_scan (10,000 x 50,000 64x64 x 8 transforms), sample_throughput speed-only
#             (10,000 images, random base UNet: DDIM-50 vs DPM-Solver++)
#   base      trains the base diffusion model on .gpu/mednist64 for BASE_STEPS (default 3000) with
#             FID early stopping; the model stays in build/gpu/ while the machine is warm
#   matched   sample_throughput with that model and FID against the real set (matched quality)
#   evaluate  `synthgate evaluate` on MedNIST 64x64 with the real test split standing in for the
#             synthetic set, on the GPU: the timings of each part, and the utility gap
# SMOKE=1 runs every phase on tiny settings (CPU is fine): it checks this script, not the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-build/gpu-session}"
mkdir -p "$OUT" build/gpu
PY="${PYTHON:-python3}"
SMOKE="${SMOKE:-0}"

if [ -d .whl ] && ! "$PY" -c "import diffusers, monai, pydantic" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  MLFLOW_DISABLE_TELEMETRY=true COLUMNS=160
unset MLFLOW_TRACKING_URI

REAL=build/gpu/mednist64
dataset() {
  [ -d "$REAL" ] && return 0
  if [ -f .gpu/mednist64.tar.gz ]; then tar -C build/gpu -xzf .gpu/mednist64.tar.gz; return 0; fi
  echo "no .gpu/mednist64.tar.gz: run 'make gpu-kit' where ../shared/data exists" >&2
  return 1
}

run_phase() {  # name, command...: logs to $OUT/<name>.log, keeps going after a failure
  local name=$1; shift
  echo "=== $name: $*" | tee -a "$OUT/$name.log"
  local t0=$SECONDS
  "$@" 2>&1 | tee -a "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/$name.log"
  [ "$rc" -eq 0 ] || FAILED="$FAILED $name"
}

if [ "$SMOKE" = 1 ]; then
  TRAIN_ARGS=(--size tiny --resolution 16 --channels 1 --classes 2 --batch 8 --steps 2 --warmup 1 --no-compile)
  MEM_ARGS=(--queries 20 --reference 200 --size 16 --chunk 8)
  SAMPLE_ARGS=(--n 8 --size tiny --resolution 16 --channels 1 --classes 2 --batch 8 --fast-steps 3 --no-compile)
  BASE_STEPS="${BASE_STEPS:-4}"; BASE=(size=tiny batch_size=8 compile=false fid_every=2 fid_images=32)
  MATCHED_N=16; EVAL_EPOCHS=1
else
  TRAIN_ARGS=()
  MEM_ARGS=(--queries 10000 --reference 50000 --size 64 --chunk 1024)
  SAMPLE_ARGS=(--n 10000 --size base --resolution 64 --channels 1 --classes 6)
  BASE_STEPS="${BASE_STEPS:-3000}"; BASE=(size=base batch_size=256 compile=true fid_every=500 fid_images=5000)
  MATCHED_N=10000; EVAL_EPOCHS=5
fi

base_params() {  # a params.yaml for the base run on the GPU
  "$PY" - "$@" <<'EOF'
import sys, yaml
p = yaml.safe_load(open("params.yaml"))
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    v = yaml.safe_load(v)
    (p["generator"] if k == "size" else p["train"])[k] = v
p["train"].update(device="cuda" if __import__("torch").cuda.is_available() else "cpu", mlflow=False,
                  lr=1e-4, ema_decay=0.999, checkpoint_every=1000, log_every=100, fid_patience=3)
p["evaluate"]["encoder"].update(arch="small", epochs=3, cache_dir="build/gpu/encoders")
p["sample"].update(sampler="dpmsolver++", steps=20)
yaml.safe_dump(p, open(sys.argv[1], "w"))
EOF
}

FAILED=""
for phase in "$@"; do
  case "$phase" in
    tests)
      run_phase tests "$PY" -m pytest -m gpu tests/gpu -p no:cacheprovider -ra --junitxml "$OUT/gpu-tests.xml" ;;
    bench)
      command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt"
      run_phase bench "$PY" benchmarks/train_throughput.py "${TRAIN_ARGS[@]}"
      run_phase bench "$PY" benchmarks/memorization_scan.py "${MEM_ARGS[@]}"
      run_phase bench "$PY" benchmarks/sample_throughput.py "${SAMPLE_ARGS[@]}" ;;
    base)
      dataset || { FAILED="$FAILED base"; continue; }
      base_params build/gpu/params.yaml "${BASE[@]}"
      run_phase base "$PY" -m synthgate train --params build/gpu/params.yaml --dataset "$REAL" \
        --out build/gpu/base --steps "$BASE_STEPS"
      cp build/gpu/base/model/synthgate_generator.json "$OUT/base-model.json" 2>/dev/null ;;
    matched)
      dataset || { FAILED="$FAILED matched"; continue; }
      run_phase matched "$PY" benchmarks/sample_throughput.py --model build/gpu/base/model --real "$REAL" \
        --n "$MATCHED_N" ;;
    evaluate)
      dataset || { FAILED="$FAILED evaluate"; continue; }
      [ -f build/gpu/params.yaml ] || base_params build/gpu/params.yaml "${BASE[@]}"
      "$PY" -m synthgate standin --real "$REAL" --out-real build/gpu/standin/real \
        --out-synthetic build/gpu/standin/synthetic > /dev/null
      "$PY" - build/gpu/params.yaml "$EVAL_EPOCHS" <<'EOF'
import sys, yaml
p = yaml.safe_load(open(sys.argv[1]))
p["evaluate"]["utility"]["epochs"] = int(sys.argv[2])
yaml.safe_dump(p, open(sys.argv[1], "w"))
EOF
      run_phase evaluate "$PY" -m synthgate evaluate --params build/gpu/params.yaml \
        --real build/gpu/standin/real --synthetic build/gpu/standin/synthetic --out build/gpu/evaluation
      "$PY" -c "import json,sys; d=json.load(open('build/gpu/evaluation/evaluation.json')); \
json.dump({'timings': d['timings'], 'summary': d['summary'], 'encoder': d['encoder']}, \
open(sys.argv[1], 'w'), indent=1)" "$OUT/evaluate.json" ;;
    *) echo "unknown phase: $phase (tests bench base matched evaluate)" >&2; exit 2 ;;
  esac
done
[ -z "$FAILED" ] || { echo "failed phases:$FAILED" >&2; exit 1; }
