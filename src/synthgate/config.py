"""Typed configuration (pydantic). Experiment settings live in ``params.yaml``, which DVC reads too.

Endpoints and secrets never live here: they come from the environment (docs/ARCHITECTURE.md, principle 8).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from synthgate.data.config import (  # noqa: F401 (re-exported: the data settings are part of Params)
    DEFAULT_MEDNIST,
    DataConfig,
    PrepareConfig,
    SourceConfig,
    SourceType,
    SplitConfig,
    ValidateConfig,
    VolumeConfig,
)
from synthgate.errors import ConfigError
from synthgate.evaluation.config import EvaluateConfig
from synthgate.generators.config import GeneratorConfig, SampleConfig, TrainConfig
from synthgate.strict import Strict

#: Environment variable that overrides ``data.source.path`` (the default dataset's location).
ENV_SOURCE_PATH = "SYNTHGATE_SOURCE_PATH"


class _Clear:
    """The type of :data:`CLEAR` (one instance, compared by identity)."""

    def __repr__(self) -> str:
        return "CLEAR"


#: An override value that sets a setting to null (``None`` as an override means "not given").
CLEAR: Any = _Clear()


class PublishConfig(Strict):
    """Publishing the approved synthetic dataset (``synthgate publish``)."""

    store: str = Field("data/published", description="a folder, file:///PATH or s3://BUCKET/PREFIX "
                       "(endpoint and credentials from the environment)")
    alias: str = Field("approved", description="the MLflow alias a version must hold to be published")
    shard_size: int = Field(5000, ge=1, description="images per .npz shard")
    png: bool = Field(True, description="also ship PNG files (zipped per class) for people who want to look")
    workers: int = Field(16, ge=1, le=128, description="parallel transfers")
    licence: str = Field("see the source dataset's licence", description="the source data's licence, "
                         "repeated in the data card")
    intended_use: str = Field(
        "Method development, teaching and benchmarking of image analysis models where the real images cannot "
        "be shared.", description="the data card's intended-use statement")


class Params(Strict):
    """The whole of ``params.yaml``. An unknown section (a misspelt ``sampel:``) is refused by name."""

    data: DataConfig = DataConfig()
    prepare: PrepareConfig = PrepareConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    generator: GeneratorConfig = GeneratorConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    publish: PublishConfig = PublishConfig()


def _locations(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p != "validate_") or "(root)"
        out.append((loc.replace("validate_", "validate"), e["msg"].removeprefix("Value error, ")))
    return out


def _format_validation_error(err: ValidationError, origin: str) -> str:
    return "\n".join(f"{origin}: {loc}: {msg}" for loc, msg in _locations(err))


def parse_model(model: type[BaseModel], data: Any, origin: str, given: set[str] | None = None) -> Any:
    """Build ``model`` from ``data``; turn pydantic errors into a ConfigError naming each field. ``given``:
    the dotted keys set on the command line (or by a pipeline parameter), so that a bad value given there is
    blamed on the option, not on the params file."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        locs = _locations(err)
        blamed = [(loc, msg) for loc, msg in locs if given and any(loc == k or loc.startswith(k + ".") for k in given)]
        if blamed and len(blamed) == len(locs):
            raise ConfigError("\n".join(f"the command-line value of {loc}: {msg}" for loc, msg in blamed),
                              hint="fix the option's value (`-h` lists each option and its default)") from None
        raise ConfigError(
            _format_validation_error(err, origin), hint=f"fix the setting(s) above in {origin}"
        ) from None


def source_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` where a source path given without a source type resets ``data.source.type`` to
    ``auto``: the type in the params file describes its own path, not this one (an .npz given for
    the MedNIST archive must not be read as MedNIST)."""
    if overrides.get("data.source.path") not in (None, CLEAR) and overrides.get("data.source.type") is None:
        return {**overrides, "data.source.type": "auto"}
    return overrides


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> bool:
    """Set each dotted key of ``overrides`` in ``data`` (nested dicts), in place; the one override
    rule of every shell (CLI options, Kubeflow parameters): ``None`` is "not given" (the value in
    ``data`` stays) and :data:`CLEAR` sets null. Returns whether anything was set."""
    changed = False
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = None if value is CLEAR else value
        changed = True
    return changed


def load_params(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Params:
    """Read ``params.yaml`` (if present), apply dotted-key ``overrides``, and validate.

    An override of ``None`` is not given (the file's value stays); :data:`CLEAR` sets the value to
    null. A ``data.source.path`` override without a ``data.source.type`` one sets the type to auto."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: params file not found", hint="pass --params PATH or create params.yaml")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        origin = str(path)
    if apply_overrides(data, source_overrides(overrides or {})):
        origin = f"{origin} (with command-line options)"
    env_path = os.environ.get(ENV_SOURCE_PATH)
    if env_path and not (overrides or {}).get("data.source.path"):
        data.setdefault("data", {}).setdefault("source", {})["path"] = env_path
    given = {k for k, v in source_overrides(overrides or {}).items() if v is not None and v is not CLEAR}
    return parse_model(Params, data, origin, given)
