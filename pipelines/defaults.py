"""Compile-time defaults of the pipelines' parameters, read from the repository's own files: the
experiment settings (``params.yaml``, as the ``params_json`` parameter) and the release policy
(``gates.yaml``, as ``gate_policy_yaml``). Environment variables play no part, so compiling is
deterministic."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "params.yaml"
POLICY_FILE = REPO / "gates.yaml"


def params_json(path: Path = PARAMS_FILE) -> str:
    """``params.yaml``'s settings, validated, as one line of JSON (the file's keys and order).

    The file's content rather than every field of ``Params``: settings it leaves out take the
    defaults of the synthgate version in the image, and the compiled YAML changes only when
    ``params.yaml`` does."""
    import json

    from synthgate.config import Params, parse_model

    data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    parse_model(Params, data, str(path))
    return json.dumps(data)


def gate_policy_yaml(path: Path = POLICY_FILE) -> str:
    """``gates.yaml``'s rules, checked, as one line of YAML (JSON flow style, the file's order).

    One line because KFP copies defaults into the comment header of the compiled file, where a
    multi-line string would break the YAML. A run may still pass a multi-line policy."""
    import json

    from synthgate.gates.policy import load_policy

    if not path.exists():
        return ""
    load_policy(path)
    return json.dumps(yaml.safe_load(path.read_text()) or {})
