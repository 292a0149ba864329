"""Scale presets (configs/scale/*.yaml): valid over params.yaml, the tiny one equal to the
defaults, all naming the same keys (so switching back undoes a switch), and rendered for
`dvc exp run -S` and for the flow's `overrides` by `realsr preset`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from realsr_r1.cli import app
from realsr_r1.config import ParamsError, load_params
from realsr_r1.presets import nest, read_preset, validate

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "configs/scale").glob("*.yaml"))


def test_presets_exist_and_validate_over_params() -> None:
    assert [p.stem for p in PRESETS] == ["janus-pro-1b", "janus-pro-7b", "tiny"]
    for path in PRESETS:
        params = validate(REPO / "params.yaml", read_preset(path))
        assert params.policy.backbone == ("tiny_llama" if path.stem == "tiny" else "janus")


def test_tiny_is_the_default_and_every_preset_names_the_same_keys() -> None:
    assert validate(REPO / "params.yaml", read_preset(REPO / "configs/scale/tiny.yaml")) == load_params(REPO / "params.yaml")
    keys = {p.stem: set(read_preset(p)) for p in PRESETS}
    assert keys["tiny"] == keys["janus-pro-1b"] == keys["janus-pro-7b"]


def test_the_7b_preset_shards_sft_weights_and_grpo_never_uses_zero3() -> None:
    big = validate(REPO / "params.yaml", read_preset(REPO / "configs/scale/janus-pro-7b.yaml"))
    assert big.sft.deepspeed == "zero3" and big.grpo.deepspeed == "zero2"
    assert big.prepare.gt_size == 384 and big.rollout.group_size == 5 and big.grpo.beta == 0.0


def test_cli_renders_dvc_arguments_and_flow_overrides() -> None:
    path = REPO / "configs/scale/janus-pro-1b.yaml"
    args = CliRunner().invoke(app, ["preset", str(path), "--params", str(REPO / "params.yaml")])
    assert args.exit_code == 0, args.output
    words = shlex.split(args.output)
    assert words[0::2] == ["-S"] * (len(words) // 2)
    rendered = dict(w.split("=", 1) for w in words[1::2])
    assert rendered["policy.backbone"] == "janus" and rendered["sft.lr"] == "2.0e-05" and rendered["prepare.short_side"] == "null"
    # what DVC does with each value: YAML-parse it into params.yaml
    assert nest({k: yaml.safe_load(v) for k, v in rendered.items()}) == nest(read_preset(path))
    as_json = CliRunner().invoke(app, ["preset", str(path), "--json", "--params", str(REPO / "params.yaml")])
    assert json.loads(as_json.output) == read_preset(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sft: {lr: 0.1}\n", "holds a mapping; write its keys dotted"),
        ("sft.learning_rate: 0.1\n", "learning_rate"),
        ("policy.backbone: janus\n", "needs policy.path"),
        ("[1, 2]\n", "non-empty mapping"),
    ],
)
def test_a_bad_preset_is_one_line_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=message):
        validate(REPO / "params.yaml", read_preset(path))
    out = CliRunner().invoke(app, ["preset", str(path), "--params", str(REPO / "params.yaml")])
    assert out.exit_code == 2 and message.split(";")[0] in out.output and len(out.output.strip().splitlines()) == 1
