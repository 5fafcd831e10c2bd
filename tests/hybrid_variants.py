"""Variants of the built-in `hybrid` scenario for tests: its TOML as a dict, changed, loaded."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from typing import Any

from lab import scenario
from lab.scenario import SCENARIO_DIR


def hybrid_data() -> dict[str, Any]:
    return tomllib.loads((SCENARIO_DIR / "hybrid.toml").read_text(encoding="utf-8"))


def hybrid_variant(change: Callable[[dict[str, Any]], None],
                   source: str = "hybrid-variant.toml") -> scenario.Scenario:
    data = hybrid_data()
    change(data)
    return scenario.from_dict(copy.deepcopy(data), source=source, name="hybrid-variant")


def app_table(data: dict[str, Any]) -> dict[str, Any]:
    """The dedicated hybrid application's [[entra.application]] table."""
    wanted = data["entra"]["hybrid_app_id"]
    return next(a for a in data["entra"]["application"] if a["app_id"] == wanted)
