"""synthgate: train, gate, register and publish synthetic medical image datasets."""

__version__ = "0.1.0"
