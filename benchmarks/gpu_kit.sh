#!/usr/bin/env bash
# Everything a GPU session needs that the GPU machine lacks (`make gpu-kit`), built here:
#   .whl/   wheels of the pinned packages its image does not hold (its python3 is 3.12 with torch,
#           torchmetrics, scipy, scikit-learn, pandas, pyarrow, rich, typer, prometheus-client, pytest)
#   .gpu/mednist64.tar.gz   a canonical 64x64 MedNIST dataset (--max-per-class, default 1500 per
#           class) prepared from ../shared/data, for the base training run and the matched-FID
#           sampling benchmark (the ../shared folder does not travel to that machine)
# Both folders are git-ignored; the device tool carries them (carry: [".whl", ".gpu"], 64 MiB in
# all) and benchmarks/gpu_session.sh uses them there.
set -euo pipefail
cd "$(dirname "$0")/.."
PER_CLASS="${1:-1500}"
PY="${PYTHON:-.venv/bin/python}"
CONSTRAINTS=requirements/constraints.txt

# diffusers and monai with the dependencies the GPU image lacks or holds at other versions
PACKAGES="diffusers monai pydantic pydantic_core annotated-types typing-inspection importlib_metadata huggingface_hub"
rm -rf .whl && mkdir -p .whl
for name in $PACKAGES; do
  pin=$(grep -i -E "^${name//[-_]/[-_]}==" "$CONSTRAINTS" | head -1)
  [ -n "$pin" ] || { echo "gpu-kit: $name is not pinned in $CONSTRAINTS" >&2; exit 1; }
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$pin"
done

SOURCE="${SYNTHGATE_SOURCE_PATH:-../shared/data/mednist/MedNIST.tar.gz}"
[ -f "$SOURCE" ] || { echo "gpu-kit: MedNIST not found at $SOURCE (set SYNTHGATE_SOURCE_PATH)" >&2; exit 1; }
rm -rf .gpu && mkdir -p .gpu/work
.venv/bin/synthgate prepare --source "$SOURCE" --source-type mednist --resolution 64 --channels 1 \
  --max-per-class "$PER_CLASS" --out .gpu/work/mednist64
tar -C .gpu/work -czf .gpu/mednist64.tar.gz mednist64
rm -rf .gpu/work
du -sh .whl .gpu/mednist64.tar.gz
total=$(du -scm .whl .gpu | tail -1 | cut -f1)
echo "gpu-kit: ${total} MiB to carry (limit 64 MiB with the working tree)"
