"""The generator as an MLflow pyfunc model: ``mlflow.pyfunc.load_model("models:/NAME@approved")``
gives a model whose ``predict`` samples images.

Input: a DataFrame with columns ``class`` (a class name) and ``count`` (images of that class);
optional columns ``sampler``, ``steps``, ``guidance_scale``, ``seed`` (first row's value is used).
Output: uint8 array (N, H, W, C), rows in the order of the input.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np


class GeneratorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):  # noqa: ANN001 (MLflow inspects the signature)
        from synthgate.generators.model import load_generator

        self.generator = load_generator(context.artifacts["model_dir"], "auto")

    def predict(self, context, model_input, params=None):  # noqa: ANN001 (untyped: MLflow reads hints)
        import pandas as pd

        from synthgate.errors import ConfigError
        from synthgate.generators.config import SampleConfig

        df = pd.DataFrame(model_input)
        missing = {"class", "count"} - set(df.columns)
        if missing:
            raise ConfigError(f"predict input lacks column(s) {sorted(missing)}; expected class, count")
        classes = self.generator.classes
        unknown = sorted(set(df["class"]) - set(classes))
        if unknown:
            raise ConfigError(f"unknown class(es) {unknown}; the model has {classes}")
        labels = np.concatenate([np.full(int(n), classes.index(c)) for c, n in zip(df["class"], df["count"], strict=True)])
        first = df.iloc[0]
        opts = {k: first[k].item() if hasattr(first[k], "item") else first[k]
                for k in ("sampler", "steps", "guidance_scale", "seed") if k in df.columns}
        cfg = SampleConfig(per_class=1, device=str(self.generator.device.type), **opts)
        return self.generator.sample(labels, cfg)
