"""Every `model-server` command fails in one clear line: the problem and the fix, on stderr, no traceback.

Each case is a real subprocess (`python -m model_server.cli ...`) with the hub off (HF_HUB_OFFLINE=1) and
an empty models dir, so the failures are the ones an offline newsroom machine meets: no hub, a missing or
unreadable file, a bad model directory, an unwritable output, bad arguments. Exit status 1 for runtime
errors, 2 for bad arguments (as argparse); `--debug` shows the traceback as well.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s+File \"", re.MULTILINE)
PROGRESS_BAR = re.compile(r"^\s*\S[^|]*: +\d+%\|.*\| \d+/\d+ \[")  # tqdm: "Loading weights: 100%|###| 86/86 ["


@dataclass(frozen=True)
class Case:
    args: list[str]  # {tmp}, {marian}, {mt5} are filled in
    status: int
    problem: list[str]  # substrings of the line that name what is wrong
    fix: list[str]  # substrings that say what to do
    files: dict[str, str | bytes] = field(default_factory=dict)  # written under {tmp} first


CASES = {
    "download without the hub": Case(
        ["download", "Helsinki-NLP/opus-mt-ar-en", "--models-dir", "{tmp}/dl"], 1,
        ["cannot download 'Helsinki-NLP/opus-mt-ar-en'", "hub cannot be reached", "HF_HUB_OFFLINE"],
        ["model-server download Helsinki-NLP/opus-mt-ar-en --models-dir DIR", "MODEL_SERVER_MODELS_DIR=DIR",
         "mount a directory holding the model files"]),
    "download given a path": Case(
        ["download", "{tmp}/some/dir"], 2, ["not a path ({tmp}/some/dir)"], ["hub id such as", "use it directly"]),
    "serve without the model or the hub": Case(
        ["serve"], 1, ["model 'Helsinki-NLP/opus-mt-ar-en' is not available", "hub cannot be reached"],
        ["model-server download Helsinki-NLP/opus-mt-ar-en", "MODEL_SERVER_TRANSLATION_MODEL="]),
    "worker without a state_url": Case(
        ["worker"], 2, ["model-server worker has no job queue"],
        ["set MODEL_SERVER_STATE_URL=redis://HOST:6379/0", "`model-server serve` runs jobs itself"]),
    "convert a hub id without the hub": Case(
        ["convert", "Helsinki-NLP/opus-mt-ar-en", "{tmp}/out"], 1, ["is not available", "HF_HUB_OFFLINE"],
        ["MODEL_SERVER_MODELS_DIR=DIR", "model-server convert /models/opus-mt-ar-en {tmp}/out"]),
    "convert an empty directory": Case(
        ["convert", "{tmp}/empty", "{tmp}/out"], 1, ["{tmp}/empty has no config.json"],
        ["model-server download ORG/NAME --models-dir DIR"], files={"empty/": ""}),
    "convert into a path below a file": Case(
        ["convert", "{marian}", "{tmp}/a-file/out"], 1, ["{tmp}/a-file: File exists"],
        ["remove it or choose another path"], files={"a-file": "x"}),
    "trim-vocab of a Marian model": Case(
        ["trim-vocab", "{marian}", "{tmp}/out"], 1,
        ["trim-vocab works on mT5/T5-family", "'{marian}' is a 'marian' model"],
        ["give an mT5 model such as csebuetnlp/mT5_multilingual_XLSum"]),
    "check-vocab with nothing to compare": Case(
        ["check-vocab", "--dtype", "float32"], 2, ["check-vocab: both sides would run the same way"],
        ["give --against MODEL", "--dtype-b"]),
    "translate a missing file": Case(
        ["translate", "{tmp}/missing.txt"], 1, ["{tmp}/missing.txt: No such file or directory"], ["check the path"]),
    "translate a file that is not UTF-8": Case(
        ["translate", "{tmp}/cp1256.txt", "--translation-model", "{marian}"], 1, ["{tmp}/cp1256.txt is not UTF-8"],
        ["save it as UTF-8", "iconv"], files={"cp1256.txt": "مرحبا".encode("cp1256")}),
    "translate with a broken config.json": Case(
        ["translate", "{tmp}/ar.txt", "--translation-model", "{tmp}/broken"], 1,
        ["{tmp}/broken/config.json is not a readable model config"], ["copy them again or download them again"],
        files={"ar.txt": "مرحبا.", "broken/config.json": '{"model_type": "marian",'}),
    "translate with the mT5 summarizer": Case(
        ["translate", "{tmp}/ar.txt", "--translation-model", "{mt5}"], 1,
        ["is a 'mt5' model, but translation needs one of marian"],
        ["point MODEL_SERVER_TRANSLATION_MODEL (--translation-model) at a MarianMT model"],
        files={"ar.txt": "مرحبا."}),
    "translate with an invalid setting": Case(
        ["translate", "{tmp}/ar.txt", "--port", "eighty"], 2, ["invalid settings: port"],
        ["correct the flag or MODEL_SERVER_* variable"], files={"ar.txt": "مرحبا."}),
    "translate a .docx without -o": Case(
        ["translate", "{tmp}/report.docx"], 2, ["{tmp}/report.docx is a Word file"], ["-o OUT.docx"],
        files={"report.docx": b"PK"}),
    "translate a broken .docx": Case(
        ["translate", "{tmp}/broken.docx", "-o", "{tmp}/out.docx"], 1,
        ["{tmp}/broken.docx: not a readable .docx", "not a zip package"], ["save it from Word as .docx"],
        files={"broken.docx": "مرحبا."}),
    "article that is broken JSON": Case(
        ["article", "{tmp}/article.json"], 1, ["article: the input is not valid JSON"],
        ['give a JSON object {"title": ..., "body": ...} or plain text'], files={"article.json": '{"title": "x",'}),
    "eval with a bad variant": Case(
        ["eval", "{tmp}/ar.txt", "{tmp}/ar.txt", "--variant", "fast:num_beam=1"], 2,
        ["'num_beam' is not a setting"], ["use a setting name such as"], files={"ar.txt": "مرحبا."}),
    "eval into an unwritable --out": Case(
        ["eval", "{tmp}/ar.txt", "{tmp}/ar.txt", "--out", "{tmp}/a-file/report"], 1,
        ["{tmp}/a-file/report: Not a directory"], ["choose another path"],
        files={"ar.txt": "مرحبا.", "a-file": "x"}),
    "eval-summaries of a file that is not JSON Lines": Case(
        ["eval-summaries", "{tmp}/pairs.jsonl"], 1, ["{tmp}/pairs.jsonl:1: expected a JSON object"],
        ['give one {"document": "...", "summary": "..."} object per line'], files={"pairs.jsonl": "plain text"}),
    "tune with a corrupt tuning file": Case(
        ["tune", "--translation-model", "{marian}", "--tuning-file", "{tmp}/tuning.json"], 1,
        ["{tmp}/tuning.json is not a valid tuning file (not JSON"], ["remove it and run `model-server tune` again"],
        files={"tuning.json": "{not json"}),
    "build-tiny below a file": Case(
        ["build-tiny", "--models-dir", "{tmp}/a-file/models"], 1, ["{tmp}/a-file/models: Not a directory"],
        ["choose another path"], files={"a-file": "x"}),
}


def run_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MODEL_SERVER_MODELS_DIR": str(tmp_path / "models"),
           "MODEL_SERVER_DEVICE": "cpu", "MODEL_SERVER_TORCH_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "model_server.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def fill(text: str, tmp_path: Path, models: dict[str, Path]) -> str:
    for name, path in {"tmp": tmp_path, **models}.items():
        text = text.replace("{" + name + "}", str(path))
    return text


def write_files(files: dict[str, str | bytes], tmp_path: Path) -> None:
    for name, content in files.items():
        path = tmp_path / name
        if name.endswith("/"):
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def the_one_line(stderr: str) -> str:
    """The failure line; fails unless it is the only non-empty line, with no traceback anywhere. The one
    exception: the libraries' progress bars (transformers' "Loading weights" while an earlier model loads)."""
    assert not TRACEBACK.search(stderr), stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS_BAR.search(line)]
    assert len(lines) == 1 and lines[0].startswith("model-server: "), stderr
    return lines[0]


@pytest.mark.parametrize("name", CASES)
def test_each_failure_is_one_line_with_the_problem_and_the_fix(name, tmp_path, tiny_marian_dir, tiny_mt5_dir):
    case = CASES[name]
    models = {"marian": tiny_marian_dir, "mt5": tiny_mt5_dir}
    write_files(case.files, tmp_path)
    done = run_cli([fill(arg, tmp_path, models) for arg in case.args], tmp_path)
    assert done.returncode == case.status, done.stderr
    assert done.stdout == ""
    line = the_one_line(done.stderr)
    for expected in case.problem + case.fix:
        assert fill(expected, tmp_path, models) in line, line


def test_debug_adds_the_traceback_and_keeps_the_line_and_status(tmp_path):
    done = run_cli(["--debug", "translate", str(tmp_path / "missing.txt")], tmp_path)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "FileNotFoundError" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"model-server: {tmp_path / 'missing.txt'}: No such file or " \
                                                   "directory; check the path"


def test_debug_is_accepted_before_and_after_the_sub_command():
    from model_server.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--debug", "download", "x/y"]).debug is True
    assert parser.parse_args(["download", "x/y", "--debug"]).debug is True
    assert parser.parse_args(["download", "x/y"]).debug is False


def test_every_sub_command_is_covered():
    """A new sub-command must get its failure cases here too."""
    from model_server.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)  # argparse keeps them only here
    covered = {case.args[0] for case in CASES.values()} | {"summarize"}  # summarize: see the unit test below
    assert commands == covered


def test_unexpected_errors_are_one_line_that_says_it_is_a_bug():
    from model_server.cli_common import failure_for

    failure = failure_for(KeyError("surprise"))
    assert failure.code == 1 and str(failure) == ("model-server: unexpected KeyError: 'surprise'. This is a bug: "
                                                  "rerun with --debug for the traceback and report it")
    assert failure_for(KeyboardInterrupt()).code == 130


def test_hub_errors_are_one_line(tmp_path):
    """What `download` meets when the hub answers but says no (not reachable from this machine: built here)."""
    from huggingface_hub import errors

    from model_server.cli_common import failure_for

    offline = failure_for(errors.LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder\nmore"))
    assert "hub cannot be reached" in str(offline) and "local model directory" in str(offline)
    invalid = failure_for(errors.HFValidationError("Repo id must be in the form 'repo_name'\nor ..."))
    assert str(invalid) == ("model-server: not a valid hub id (Repo id must be in the form 'repo_name'); give "
                            "ORG/NAME, e.g. Helsinki-NLP/opus-mt-ar-en")


def test_summarize_with_a_translation_model_as_summarizer_says_which_setting(tmp_path, tiny_marian_dir):
    """In process (the subprocess cases above cover the error boundary itself): the line and status."""
    from model_server.cli import main

    (tmp_path / "ar.txt").write_text("مرحبا.", encoding="utf-8")
    with pytest.raises(SystemExit) as caught:
        main(["summarize", str(tmp_path / "ar.txt"), "--translation-model", str(tiny_marian_dir),
              "--summarization-model", str(tiny_marian_dir), "--device", "cpu", "--log-level", "warning"])
    assert caught.value.code == 1
    assert str(caught.value) == (
        f"model-server: model '{tiny_marian_dir}' is a 'marian' model, but summarization needs one of mt5, t5: "
        "point MODEL_SERVER_SUMMARIZATION_MODEL (--summarization-model) at an mT5 model, e.g. "
        "csebuetnlp/mT5_multilingual_XLSum")


def test_outputs_are_checked_before_the_long_run(tmp_path):
    """`eval --out` and `eval-summaries --out` call prepare_output first: the parent is created, nothing written."""
    from model_server.cli_common import prepare_output

    out = prepare_output(tmp_path / "new" / "report.json")
    assert out.parent.is_dir() and not out.exists()
    with pytest.raises(IsADirectoryError):
        prepare_output(tmp_path / "new")
