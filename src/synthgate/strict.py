"""The one base of every settings model (``params.yaml``'s sections, ``gates.yaml``): an unknown
key is refused by name (a misspelt setting is an error, not a silent default) and values are
frozen once validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
