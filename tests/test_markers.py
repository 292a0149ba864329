"""The `server` / `stage` / `distributed` markers are enforced (tests/markers.py, conftest.py):
starting one of them unmarked fails with one line naming the marker, from the test itself, from
a module fixture, from a child process; marked, it runs."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib

import pytest

from tests import markers
from tests.helpers import REPO

PY = sys.executable


@pytest.mark.parametrize(
    ("argv", "marker"),
    [
        ([PY, "-m", "stages.sft"], "stage"),
        ([PY, "-u", "-m", "stages.grpo"], "stage"),
        ([PY, str(REPO / "stages/ingest.py")], "stage"),
        ([f"{REPO}/.venv/bin/dvc", "repro"], "stage"),
        ([PY, "-m", "dvc", "status"], "stage"),
        (["/bin/sh", "-c", "dvc pull && echo done"], "stage"),
        ([f"{REPO}/.venv/bin/moto_server", "-p", "5000"], "server"),
        (["prefect", "server", "start"], "server"),
        ([f"{REPO}/.venv/bin/prefect", "worker", "start", "--pool", "p"], "server"),
        ([PY, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"], "server"),  # an ephemeral server
        (["prefect", "--no-prompt", "deploy", "--all"], None),  # a client (of a server started as above)
        ([PY, "-m", "prefect.engine"], None),  # a flow run (its stages check themselves)
        (["weed", "server", "-s3"], "server"),
        (["dask", "scheduler"], "server"),
        (["env", "A=1", "dask-worker", "tcp://h:1"], "server"),
        ([PY, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--module", "stages.sft"], "distributed"),
        (["deepspeed", "train.py"], "distributed"),
        ([PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "stages.sft"], "distributed"),
        (["torchrun", "--standalone", "x.py"], "distributed"),
        ([PY, "-m", "realsr_r1.cli", "synthesize"], None),
        ([PY, "-c", "import stages.sft"], None),
        (["git", "commit", "-m", "dvc and stages.sft"], None),
        (["make", "remote-s3"], None),  # make is not checked; the dvc it runs checks itself
        ([b"/usr/bin/chromium", b"--headless"], None),
    ],
)
def test_what_needs_which_marker(argv: list, marker: str | None) -> None:
    need = markers.required(argv)
    assert (need and need[0]) == marker


def test_the_markers_are_registered() -> None:
    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert {m.split(":")[0] for m in ini["markers"]} == set(markers.MARKERS)
    assert "--strict-markers" in ini["addopts"]


def _refused(excinfo: pytest.ExceptionInfo, marker: str) -> str:
    """The one line, taken off the record so that this test itself does not fail."""
    assert markers.take_violations() == [str(excinfo.value)]
    line = str(excinfo.value)
    assert "\n" not in line and line.endswith(f"without the `{marker}` marker: add @pytest.mark.{marker}")
    return line


def test_this_unmarked_test_may_not_start_a_stage_a_server_or_ranks(request: pytest.FixtureRequest) -> None:
    assert markers.state.test == request.node.nodeid  # set before the set-up, by conftest.py
    with pytest.raises(markers.UnmarkedStart) as refused:
        subprocess.run([PY, "-m", "stages.no_such_stage"], check=False)
    assert _refused(refused, "stage").startswith(f"{request.node.nodeid} starts a pipeline stage (`{PY} -m stages.no_such_stage`)")
    with pytest.raises(markers.UnmarkedStart) as refused:
        subprocess.Popen(["moto_server", "-p", "1"])
    _refused(refused, "server")
    with socket.socket() as sock, pytest.raises(markers.UnmarkedStart) as refused:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
    assert "listen on 127.0.0.1:" in _refused(refused, "server")


def test_a_child_checks_what_it_starts() -> None:
    """A stage that relaunches itself under deepspeed is a child's spawn: it refuses and records it."""
    code = "import subprocess, sys; subprocess.run([sys.executable, '-m', 'deepspeed.launcher.runner', '--module', 'x'])"
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "UnmarkedStart" in done.stderr
    [line] = markers.take_violations()
    assert line.endswith("without the `distributed` marker: add @pytest.mark.distributed")


@pytest.mark.stage
def test_a_marked_test_starts_what_its_markers_allow() -> None:
    done = subprocess.run([PY, "-m", "stages.no_such_stage"], capture_output=True, text=True, check=False)
    assert "No module named stages.no_such_stage" in done.stderr and markers.take_violations() == []
    with pytest.raises(markers.UnmarkedStart):  # stage, not server
        subprocess.run(["moto_server"], check=False)
    markers.take_violations()


def test_a_module_fixture_belongs_to_the_test_whose_set_up_runs_it(pytester: pytest.Pytester) -> None:
    """In a pytest run of its own: the first test to set up the fixture needs the marker, a later
    test reusing it does not; a test that catches the error still fails, with the one line."""
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport, pytest_runtest_setup  # noqa: F401")
    fixture = """
        import subprocess, sys
        import pytest

        @pytest.fixture(scope="module")
        def stage_run():
            return subprocess.run([sys.executable, "-m", "stages.no_such_stage"], capture_output=True).returncode
        """
    pytester.makepyfile(
        test_unmarked=fixture
        + """
        def test_first(stage_run):
            pass

        def test_hides_the_error():
            try:
                subprocess.run(["torchrun", "x.py"])
            except Exception:
                pass
        """,
        test_marked=fixture
        + """
        @pytest.mark.stage
        def test_first(stage_run):
            pass

        def test_reuses_it_unmarked(stage_run):
            pass
        """,
    )
    saved = markers.state.test, markers.state.allowed
    try:
        result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:xdist")
    finally:
        markers.begin(*saved)
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "test_unmarked.py::test_first starts a pipeline stage (*) without the `stage` marker: add @pytest.mark.stage",
            (
                "test_unmarked.py::test_hides_the_error starts DeepSpeed / torchrun ranks (`torchrun x.py`) without the "
                "`distributed` marker: add @pytest.mark.distributed"
            ),
        ],
        consecutive=False,
    )
