"""The `realsr` command as a newcomer meets it: quick help, quiet logs, and the README's examples.

Each check runs the real command in a subprocess, as a shell would: the help must not pay for
torch/transformers/pyiqa/boto3, libraries' INFO lines stay off stderr unless `-v` is given, and
the README's `realsr reward` / `realsr upscale` lines run as written on the shipped `examples/`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.servers import MotoS3, s3_env

HEAVY = ("torch", "transformers", "pyiqa", "boto3", "botocore", "cv2", "sklearn")
CLI = [sys.executable, "-m", "realsr_r1.cli"]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def realsr(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=env or _env(), timeout=600, check=False)


@pytest.mark.parametrize("args", [[], ["reward"], ["upscale"], ["synthesize"], ["pull"], ["init-policy"], ["annotate-template"], ["evaluate"]])
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    """`realsr [CMD] --help` parses every command's options without importing what they run on."""
    code = (
        "import sys\n"
        "from realsr_r1.cli import app\n"
        f"try:\n    app({[*args, '--help']!r})\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert "Usage" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]", f"`realsr {' '.join(args)} --help` imported heavy modules"


def _readme_commands(command: str) -> list[list[str]]:
    """The README's `realsr COMMAND examples/...` lines as argument lists: comments and [optional] cut."""
    lines = re.findall(rf"^realsr {command} examples/.*$", (REPO / "README.md").read_text(), re.MULTILINE)
    return [[a for a in shlex.split(line.split("  #")[0])[1:] if not re.search(r"[\[\]]", a)] for line in lines]


def test_readme_reward_example_gives_the_documented_scores() -> None:
    commands = _readme_commands("reward")
    assert commands, "the README shows no `realsr reward examples/...` command"
    for args in commands:
        res = realsr(*args)
        assert res.returncode == 0, res.stderr
        assert "degradation    0.6000" in res.stdout and "understanding  0.8571" in res.stdout, res.stdout
        assert "format         1.0000" in res.stdout
    scores = json.loads(realsr(*commands[0], "--json").stdout)
    assert scores["total"] == pytest.approx(1.0 + 0.6 + 6 / 7 + scores["generation"])


def test_library_info_lines_only_with_verbose(tmp_path) -> None:
    """pyiqa announces each metric it builds at INFO; that is noise unless asked for with -v."""
    case = str(REPO / "examples/reward/case.json")
    params = tmp_path / "params.yaml"  # GMSD fidelity: a metric pyiqa builds (SSIM is computed from its functions)
    params.write_text("rewards: {generation: {fidelity_metric: gmsd}}\ngrpo: {image_credit: sequence}\n")
    quiet = realsr("reward", case, "--params", str(params))
    assert quiet.returncode == 0, quiet.stderr
    assert "is created" not in quiet.stderr and "INFO" not in quiet.stderr, quiet.stderr
    loud = realsr("-v", "reward", case, "--params", str(params))
    assert loud.returncode == 0 and "Network [GMSD] is created" in loud.stderr, loud.stderr


@pytest.mark.server
def test_botocore_credential_lookup_only_with_verbose(s3: MotoS3) -> None:
    env = _env(**s3_env(s3.url), REALSR_RELEASE_BUCKET="no-such-bucket-yet")
    quiet = realsr("releases", env=env)
    assert "Found credentials" not in quiet.stderr and "INFO" not in quiet.stderr, quiet.stderr
    loud = realsr("--verbose", "releases", env=env)
    assert "Found credentials in environment variables" in loud.stderr, loud.stderr


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained small policy checkpoint, written by `realsr init-policy` from real tokenizers."""
    import yaml

    from realsr_r1.tokenizers.factory import save_image_tokenizer
    from realsr_r1.tokenizers.text import load_text_tokenizer, record_longest_block
    from tests.helpers import annotation_texts, tiny_chain

    root = tmp_path_factory.mktemp("policy")
    _, image_tok, text_tok = tiny_chain(n=12, codebook=64)
    save_image_tokenizer(image_tok, root / "tokenizer/image")
    text_tok.save_pretrained(root / "tokenizer/text")
    text = load_text_tokenizer(root / "tokenizer/text")  # as the tokenizer stage saves it: with its longest block
    record_longest_block(text, annotation_texts())
    text.save_pretrained(root / "tokenizer/text")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["policy"].update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    res = realsr("init-policy", "--tokenizer", str(root / "tokenizer"), "-o", str(root / "policy_init"),
                 "--params", str(root / "params.yaml"))
    assert res.returncode == 0, res.stderr
    return root / "policy_init"


def test_readme_upscale_example_runs(policy_dir: Path, tmp_path: Path) -> None:
    """The README's upscale line, run where `models/policy_init` is a real (untrained) checkpoint."""
    from PIL import Image

    commands = _readme_commands("upscale")
    assert commands, "the README shows no `realsr upscale examples/...` command"
    (tmp_path / "examples").symlink_to(REPO / "examples")
    (tmp_path / "models").mkdir()
    (tmp_path / "models/policy_init").symlink_to(policy_dir)
    for args in commands:
        res = realsr(*args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        out = tmp_path / args[args.index("-o") + 1]
        w, h = Image.open(REPO / args[1]).size
        assert Image.open(out).size == (4 * w, 4 * h)


def test_upscale_without_a_model_says_so_in_one_line(tmp_path: Path) -> None:
    res = realsr("upscale", str(REPO / "examples/photo.png"), "-o", str(tmp_path / "o.png"),
                 "--model", str(tmp_path / "missing"))
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "o.png").exists()
