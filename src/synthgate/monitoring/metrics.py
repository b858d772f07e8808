"""Prometheus metrics, defined once on a dedicated registry.

``REGISTRY`` is not the process-global default registry, so importing this module twice (tests,
notebooks) never raises "duplicated timeseries", and exposing it is an explicit choice:
``prometheus_client.start_http_server(port, registry=REGISTRY)`` or
``push_to_gateway(gateway, job=..., registry=REGISTRY)``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

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
