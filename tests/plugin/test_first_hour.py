"""The demo's first hour: its progress reaches the terminal as it runs, it says up
front how long it takes, its project stays out of git, and the README keeps two
set-up commands."""

from __future__ import annotations

import io
import re
import subprocess
import time

import pytest

from sasi_scipion.gui_launch import DEFAULT_WORK, how_to_open
from sasi_scipion.log_follow import LogFollower, following
from sasi_scipion.workflow_demo import estimated_minutes

from .conftest import REPOSITORY, TINY_ITERATIONS


def test_follower_echoes_whole_new_lines_as_they_come(tmp_path) -> None:
    log = tmp_path / "logs" / "run.stderr"
    out = io.StringIO()
    follower = LogFollower(lambda: [str(log)], out, "  train | ")
    follower.poll()
    assert out.getvalue() == ""
    log.parent.mkdir()
    log.write_text("train: iteration 10/300 loss=0.5 elapsed 0:00:10 eta 0:04:50\npartial")
    follower.poll()
    assert out.getvalue() == "  train | train: iteration 10/300 loss=0.5 elapsed 0:00:10 " \
                             "eta 0:04:50\n"
    with log.open("a") as handle:
        handle.write(" line\n")
    follower.poll()
    assert out.getvalue().splitlines()[-1] == "  train | partial line"


def test_following_prints_while_the_block_runs(tmp_path) -> None:
    log = tmp_path / "run.stderr"
    out = io.StringIO()
    with following(lambda: [str(log)], out, "| ", poll_s=0.05):
        log.write_text("eta 0:01:00\n")
        deadline = time.monotonic() + 10
        while "eta 0:01:00" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.getvalue() == "| eta 0:01:00\n"
        with log.open("a") as handle:
            handle.write("eta 0:00:00\n")
    assert out.getvalue().splitlines() == ["| eta 0:01:00", "| eta 0:00:00"]


def test_estimate_grows_with_iterations_and_shrinks_with_cores() -> None:
    assert estimated_minutes(300, 20, cores=2) > estimated_minutes(300, 20, cores=8)
    assert estimated_minutes(600, 20, cores=2) > estimated_minutes(300, 20, cores=2)
    # benchmarks/RESULTS.md: 300 iterations took 464 s on 2 cores
    assert 6 <= estimated_minutes(300, 20, cores=2) <= 15


def test_demo_output_is_ignored_by_git() -> None:
    checked = subprocess.run(["git", "check-ignore", "-q", f"{DEFAULT_WORK}/scipion/x"],
                             cwd=REPOSITORY)
    assert checked.returncode == 0


def test_printed_gui_command_is_the_script() -> None:
    command = how_to_open(REPOSITORY / DEFAULT_WORK, "sasi_demo_1")
    assert command == (f"bash {REPOSITORY / 'scripts' / 'gui'} --work "
                       f"{REPOSITORY / DEFAULT_WORK} sasi_demo_1")


def test_readme_keeps_two_setup_commands() -> None:
    readme = (REPOSITORY / "README.md").read_text()
    block = readme.split("## Two commands on a fresh machine", 1)[1].split("```")[1]
    commands = [line for line in block.splitlines()[1:] if line.strip()]
    assert [re.split(r"\s+#", c)[0].strip() for c in commands] == ["bash scripts/demo",
                                                                   "bash scripts/test"]


@pytest.mark.slow
def test_workflow_echoes_each_step_with_its_progress(tiny_workflow, tiny_workflow_log) -> None:
    text = tiny_workflow_log.getvalue()
    for label in ("import tomograms", "sasi pretrain", "sasi train", "sasi pick",
                  "sasi evaluate", "export picks"):
        assert f"[workflow] {label}: running" in text and f"[workflow] {label}: done" in text
    last = f"iteration {TINY_ITERATIONS}/{TINY_ITERATIONS}"
    assert re.search(rf"    sasi train \| train: {last} .*elapsed \S+ eta \S+", text), text
    assert re.search(r"    sasi pretrain \| pretrain: iteration 2/2 .*eta ", text), text
    assert text.index("[workflow] sasi train: running") < text.index(last) \
        < text.index("[workflow] sasi train: done")
