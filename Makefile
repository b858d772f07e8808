# synthgate: `make demo` runs the flow end to end on MedNIST, `make test` runs the tests.
# Both create .venv and install the pinned dependencies on first use.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
CONSTRAINTS := requirements/constraints.txt
STAMP  := $(VENV)/.installed
# what `make lint` type-checks (tests/unit/test_layers.py runs the same in `make test`)
MYPY_TARGETS := src/synthgate/stages.py src/synthgate/demo.py src/synthgate/cli components src/synthgate/evaluation/readers src/synthgate/config.py src/synthgate/gates src/synthgate/kubeflow
SYSDEPS := $(VENV)/.sysdeps
export MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1

MLFLOW_PORT ?= 5000
.PHONY: help venv demo test docs-check test-fast repro lint lock clean mlflow manifests images images-cuda test-containers test-containers-cuda pipelines gpu-kit

help:
	@echo "make demo      run ingest/prepare/validate on MedNIST (../shared/data) end to end"
	@echo "make test      run the test suite (unit, integration, end to end)"
	@echo "make test-fast unit tests only"
	@echo "make repro     dvc repro (the same stages through DVC)"
	@echo "make lint      ruff"
	@echo "make mlflow    MLflow server (SQLite + local artifacts, basic-auth; admin password in mlruns/credentials.env) on 127.0.0.1:$(MLFLOW_PORT)"
	@echo "make lock      re-resolve and rewrite $(CONSTRAINTS)"
	@echo "make docs-check  the demo's pages in headless chromium, offline; screenshots into docs/screenshots"
	@echo "make images  build the CPU image ghcr.io/synthgate/synthgate:VERSION-cpu (podman or docker)"
	@echo "make test-containers  build the image if needed and test it (CLI, stages, kfp DockerRunner)"
	@echo "make images-cuda  build the CUDA image ghcr.io/synthgate/synthgate:VERSION-cuda"
	@echo "make test-containers-cuda  build the CUDA image if needed and test it (stack, Inception-FID, pipeline)"
	@echo "make gpu-kit   wheels + a 64x64 MedNIST set for benchmarks/gpu_session.sh on a GPU machine"

venv: $(STAMP)

# torch first, from its pin: any other torch spec pulls several GB of CUDA wheels.
# medmnist without its dependencies: it lists torchvision, which breaks a CPU environment.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) torch
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev]'
	$(PIP) install -q --no-deps -c $(CONSTRAINTS) medmnist
	touch $(STAMP)

# Debian packages the tests start on 127.0.0.1: Prometheus and its Pushgateway (promtool checks the
# shipped alert rules), and chromium with its chromedriver (the reader-study browser test; Selenium
# drives the system browser, nothing is downloaded at run time). Installed with apt-get (as root, or
# through sudo) when missing.
DEBS := prometheus prometheus-pushgateway chromium chromium-driver
$(SYSDEPS): | $(STAMP)
	@if ! command -v prometheus >/dev/null || ! command -v prometheus-pushgateway >/dev/null || \
	    ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  echo "installing $(DEBS) (apt-get)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q $(DEBS) >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $(DEBS) >/dev/null; } || \
	  echo "WARNING: could not install $(DEBS); the tests that need them will be skipped"; \
	fi
	touch $@

demo: $(STAMP)
	$(BIN)/synthgate demo

test: $(STAMP) $(SYSDEPS)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# every page the demo leaves, opened in headless chromium with no network, screenshotted into docs/screenshots
docs-check: $(STAMP) $(SYSDEPS)
	SYNTHGATE_SCREENSHOTS=$(abspath docs/screenshots) $(BIN)/python -m pytest -q tests/e2e/test_demo.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not integration and not e2e"

repro: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks pipelines components
	PYTHONPATH=src $(BIN)/lint-imports
	$(BIN)/python -m mypy $(MYPY_TARGETS)

lock:
	rm -rf /tmp/synthgate-lock && $(PYTHON) -m venv /tmp/synthgate-lock
	/tmp/synthgate-lock/bin/pip install -q torch==2.13.0
	/tmp/synthgate-lock/bin/pip install -q -e '.[dev]'
	/tmp/synthgate-lock/bin/pip install -q --no-deps medmnist
	{ echo "# Pinned versions for every environment (CPU venv, images). Regenerate with: make lock"; \
	  echo "# torch is the local CPU wheel on the build machines; the CUDA image installs its own torch first."; \
	  /tmp/synthgate-lock/bin/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > $(CONSTRAINTS)

# Kubeflow: compile pipelines/*.py to pipelines/compiled/*.yaml (upload in the Kubeflow UI); CI runs --check
pipelines: $(STAMP)
	$(BIN)/python -m pipelines.compile

clean:
	rm -rf $(VENV) .pytest_cache data reports

mlflow: $(STAMP)
	$(BIN)/synthgate mlflow-serve --root mlruns --port $(MLFLOW_PORT)

# Render every kustomize overlay (offline; output discarded): fails on any broken overlay.
manifests: $(STAMP)
	for o in k8s/overlays/*/ k8s/pipeline-rbac/; do $(BIN)/kubectl kustomize $$o >/dev/null || exit 1; done

# Container images (docker/): podman, installed by docker/podman-setup.sh when missing, or docker
# when a Docker engine answers; the base is python:3.11-slim-bookworm, or a debootstrap base
# (docker/make-base.sh) where no registry is reachable. BASE_IMAGE=... overrides it.
images:
	docker/build.sh cpu

# The CUDA image (docker/Dockerfile.cuda) on the registry's pytorch/pytorch base, or, where that
# cannot be pulled, on a PyTorch CUDA base made from PyPI's CUDA wheels (docker/Dockerfile.torch-cuda:
# ~5 GB of downloads, about 5 minutes here). CUDA_BASE_IMAGE=... picks another base.
images-cuda:
	docker/build.sh cuda

# Not part of `make test`: tests/containers/conftest.py skips them unless SYNTHGATE_CONTAINER_TESTS=1.
test-containers: $(STAMP)
	SYNTHGATE_CONTAINER_TESTS=1 $(BIN)/python -m pytest -q -m containers tests/containers

# The CUDA image's tests too (built when missing; they run on CPU where no GPU is present).
test-containers-cuda: $(STAMP)
	SYNTHGATE_CONTAINER_TESTS=1 SYNTHGATE_CUDA_IMAGE_TESTS=1 $(BIN)/python -m pytest -q -m containers tests/containers/test_cuda_image.py

# What a GPU session carries (.whl/, .gpu/): the wheels its image lacks and a canonical 64x64 MedNIST
# set; benchmarks/gpu_session.sh runs the GPU tests and benchmarks there (see its header).
gpu-kit: $(STAMP)
	PYTHON=$(BIN)/python benchmarks/gpu_kit.sh
