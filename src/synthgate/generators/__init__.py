"""Class-conditional image generators: a DDPM UNet (diffusers) and the cpD-GAN of dumontschutte2021.

Entry points (import the submodules; this package imports only the settings, not torch):

- :func:`synthgate.generators.train.train` -- dataset -> checkpoints + ``out_dir/model``
- :func:`synthgate.generators.sample.sample` -- model -> synthetic canonical dataset
- :func:`synthgate.generators.model.load_generator` / ``save_generator`` -- the model format
"""

from synthgate.generators.config import GeneratorConfig, SampleConfig, TrainConfig

__all__ = ["GeneratorConfig", "SampleConfig", "TrainConfig"]
