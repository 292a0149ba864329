"""Scale presets: flat YAML files of dotted params keys (`configs/scale/*.yaml`) laid over
params.yaml, the same overrides `dvc exp run -S` and the Prefect flow's `overrides` take.

A preset names every key a change of scale touches (backbone, image size, batch, learning
rates, launcher, DeepSpeed stage), so applying the tiny one after a Janus run puts them all back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from realsr_r1.config import Params, ParamsError, load_params


def nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """`{"grpo.beta": 0.04}` -> `{"grpo": {"beta": 0.04}}` (what `load_params` merges)."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def yaml_scalar(value: Any) -> str:
    """A value as text every YAML reader parses back to it: JSON, with floats given a mantissa
    dot (`2.0e-05`; YAML 1.1 readers such as PyYAML take `2e-05` for a string)."""
    if isinstance(value, str):
        return value
    text = json.dumps(value)
    if isinstance(value, float) and "e" in text and "." not in text.split("e")[0]:
        text = text.replace("e", ".0e", 1)
    return text


def set_args(dotted: dict[str, Any]) -> list[str]:
    """The overrides as `dvc exp run -S` values: `key=value` (DVC YAML-parses the value)."""
    return [f"{k}={yaml_scalar(v)}" for k, v in dotted.items()]


def validate(params_file: str | Path, dotted: dict[str, Any]) -> Params:
    """params.yaml with the overrides laid over it, validated: a bad key or value is one line naming it."""
    return load_params(params_file, nest(dotted))


def read_preset(path: str | Path) -> dict[str, Any]:
    """A preset file: a mapping of dotted keys to values (no nesting, so every key is spelled out)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: preset not found") from None
    except yaml.YAMLError:
        raise ParamsError(f"{path}: not valid YAML") from None
    if not isinstance(raw, dict) or not raw:
        raise ParamsError(f"{path}: a preset is a non-empty mapping of dotted params keys to values")
    nested = [k for k, v in raw.items() if isinstance(v, dict)]
    if nested:
        raise ParamsError(f"{path}: key {nested[0]!r} holds a mapping; write its keys dotted ({nested[0]}.KEY: value)")
    return raw
