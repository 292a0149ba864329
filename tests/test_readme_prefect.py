"""The README's Prefect set-up works as written, on a fresh server.

The fenced block of README.md that holds `make deploy` is run as the README gives it (the local
server's port aside: the test's server listens on a free one), twice, in a copy of this
repository; each run must exit 0, and afterwards every deployment and work pool prefect.yaml
names is registered on the server. The test follows the README: edit the block, and this runs
the edited lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers import copy_repo
from tests.servers import BIN, PrefectServer

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```[\w-]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
README_API = "127.0.0.1:4200"  # the local server's address as the README writes it


def setup_block(readme: str) -> str:
    """The one fenced block of the README with a `make deploy` line."""
    blocks = [b for b in FENCE.findall(readme) if re.search(r"^make deploy\b", b, re.MULTILINE)]
    assert len(blocks) == 1, f"expected one README block with `make deploy`, found {len(blocks)}"
    return blocks[0]


def test_setup_block_points_prefect_at_the_local_server() -> None:
    block = setup_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert f"PREFECT_API_URL=http://{README_API}/api" in block, block
    assert "prefect deploy" not in block.replace("make deploy", ""), (
        "the block deploys through `make deploy` only"
    )


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.mark.server
def test_readme_prefect_setup_registers_every_deployment(tmp_path: Path) -> None:
    block = setup_block((ROOT / "README.md").read_text(encoding="utf-8"))
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_repo(ROOT, repo)
    (repo / ".venv").symlink_to(BIN.parent)  # the project's environment, as `make install` leaves it
    server = PrefectServer(tmp_path)
    try:
        script = block.replace(README_API, f"127.0.0.1:{server.port}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIRTUAL_ENV", "VENV"))}
        env.update({"PREFECT_HOME": str(tmp_path / "client-home"), "DO_NOT_TRACK": "1"})
        for attempt in ("fresh server", "again"):
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=repo,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert done.returncode == 0, (
                f"{attempt}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )

        spec = yaml.safe_load((repo / "prefect.yaml").read_text(encoding="utf-8"))
        api = server.api_url
        for deployment in spec["deployments"]:
            flow = deployment["entrypoint"].rsplit(":", 1)[1]
            found = _get(f"{api}/deployments/name/{flow}/{deployment['name']}")
            assert found["work_pool_name"] == deployment["work_pool"]["name"], found
            assert _get(f"{api}/work_pools/{found['work_pool_name']}")["type"] == "process"
        steps = _get(f"{api}/deployments/name/grpo/full")[
            "pull_steps"
        ]  # it runs in the checkout it was deployed from
        assert {"prefect.deployments.steps.set_working_directory": {"directory": str(repo)}} in steps, steps
        pools = {d["work_pool"]["name"] for d in spec["deployments"]}
        assert {f"work pool {pool}: already there" for pool in pools} <= set(done.stdout.splitlines()), (
            done.stdout
        )
        assert (
            subprocess.run(
                ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
            ).stdout
            == ""
        )
    finally:
        server.stop()
