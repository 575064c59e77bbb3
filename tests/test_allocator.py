"""The malloc arena cap (model_server/allocator.py): the command re-executes itself once, in the same
process, with MALLOC_ARENA_MAX set, and leaves an operator's own value or malloc_arena_max=0 alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROGRAM = ("import os, sys; from model_server.allocator import apply_arena_cap; "
           "print(os.getpid(), os.environ.get('MALLOC_ARENA_MAX'), flush=True); "
           "apply_arena_cap(int(sys.argv[1])); print(os.getpid(), os.environ.get('MALLOC_ARENA_MAX'))")


def run(count: int, **env: str) -> list[list[str]]:
    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(count)], env={**clean, **env}, cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split() for line in out.splitlines()]


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")


def test_the_command_reexecutes_itself_once_with_the_cap():
    lines = run(2)
    # Before the exec: no cap; after it the program starts again (same PID) with the cap, and runs to the end.
    pids = {line[0] for line in lines}
    assert len(pids) == 1
    assert [line[1] for line in lines] == ["None", "2", "2"]


def test_an_operators_own_value_is_kept():
    assert [line[1] for line in run(2, MALLOC_ARENA_MAX="6")] == ["6", "6"]


def test_zero_keeps_glibcs_default():
    assert [line[1] for line in run(0)] == ["None", "None"]
