"""Operational monitoring: Prometheus metrics of the pipeline's long-running stages."""
