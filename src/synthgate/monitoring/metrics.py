"""Prometheus metrics, defined once on a dedicated registry.

``REGISTRY`` is not the process-global default registry, so importing this module twice (tests,
notebooks) never raises "duplicated timeseries", and exposing it is an explicit choice:
``synthgate.monitoring.push`` pushes it to a Pushgateway after a batch stage (``PUSHGATEWAY_URL``)
or serves it on ``/metrics`` for a long-running process.

Batch stages are short-lived processes, so what matters after a push is the *last* value: alerts
use the gauges (``synthgate_stage_failed``, ``synthgate_gate_passed``), not rates of counters that
restart at zero in every process. Names and labels here are what ``k8s/`` alert rules and the
Grafana dashboard query; change them together.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

# --- every stage (prepare, validate, train, sample, evaluate, gate, register, publish, pull) ---
STAGE_DURATION = Gauge(
    "synthgate_stage_duration_seconds", "Wall time of the stage's last run", ["stage"], registry=REGISTRY
)
STAGE_RUNS = Counter(
    "synthgate_stage_runs", "Stage runs by outcome (success or failure)", ["stage", "outcome"], registry=REGISTRY
)  # exposed as synthgate_stage_runs_total
STAGE_FAILED = Gauge(
    "synthgate_stage_failed", "1 if the stage's last run failed, else 0", ["stage"], registry=REGISTRY
)
STAGE_LAST_SUCCESS = Gauge(
    "synthgate_stage_last_success_timestamp_seconds", "Unix time of the stage's last successful run", ["stage"],
    registry=REGISTRY,
)

# --- training (generators.train) ---
TRAIN_STEPS = Counter(
    "synthgate_train_steps", "Generator training steps completed", ["model_type"], registry=REGISTRY
)  # exposed as synthgate_train_steps_total
TRAIN_IMAGES_PER_SECOND = Gauge(
    "synthgate_train_images_per_second", "Real training images consumed per second (last log window)",
    ["model_type"], registry=REGISTRY,
)
TRAIN_LOSS = Gauge(
    "synthgate_train_loss", "Mean training loss of the last log window (GAN: discriminator loss)",
    ["model_type"], registry=REGISTRY,
)
TRAIN_FID = Gauge(
    "synthgate_train_fid", "FID of the EMA model at the last early-stopping evaluation (reference encoder features)",
    ["model_type"], registry=REGISTRY,
)
TRAIN_FID_BEST = Gauge(
    "synthgate_train_fid_best", "Best FID so far: the weights that training keeps", ["model_type"], registry=REGISTRY,
)
TRAIN_AUGMENT_P = Gauge(
    "synthgate_train_augment_p",
    "Discriminator augmentation probability p (StyleGAN2's ADA; mean of the last log window)", ["model_type"],
    registry=REGISTRY,
)

# --- gate (gates.decision) ---
GATE_PASSED = Gauge(
    "synthgate_gate_passed", "1 if the last gate decision passed, else 0", ["dataset"], registry=REGISTRY
)
GATE_RULE_PASSED = Gauge(
    "synthgate_gate_rule_passed", "1 if the rule passed in the last gate decision, else 0", ["dataset", "rule"],
    registry=REGISTRY,
)
GATE_DECISIONS = Counter(
    "synthgate_gate_decisions", "Gate rule evaluations by outcome (pass or fail)", ["rule", "outcome"],
    registry=REGISTRY,
)  # exposed as synthgate_gate_decisions_total

# --- publish and pull (publish.*) ---
TRANSFER_BYTES = Counter(
    "synthgate_transfer_bytes", "Bytes moved by publish (upload) and pull (download)", ["operation", "store"],
    registry=REGISTRY,
)  # exposed as synthgate_transfer_bytes_total
TRANSFER_FILES = Counter(
    "synthgate_transfer_files", "Files moved by publish and pull", ["operation", "store"], registry=REGISTRY
)
TRANSFER_FAILURES = Counter(
    "synthgate_transfer_failures", "Failed publish or pull operations by reason", ["operation", "reason"],
    registry=REGISTRY,
)  # exposed as synthgate_transfer_failures_total
PUBLISHED_IMAGES = Gauge(
    "synthgate_published_images", "Images in the last published dataset", ["dataset"], registry=REGISTRY
)
