"""What every `model-server` sub-command shares: settings flags, settings from flags, loading the services,
reading the input, and the one error boundary that turns any failure into one line on stderr.

`cli` (the parser and most commands) and `cli_summaries` (summarize, article) both import this module and
never each other's private helpers.

The error boundary (`run_command`): a command raises what it raises (ServiceError, OSError, huggingface_hub
errors, ValueError from loaders, pydantic ValidationError ...); `failure_for` maps it to a `CommandFailed`,
whose message names the problem and the fix, and whose status is 1 (runtime) or 2 (usage, as argparse).
Tracebacks only with `--debug`; an exception nobody anticipated still prints one line, saying it is a bug.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from model_server.errors import ServiceError
from model_server.files import read_utf8
from model_server.settings import Settings

PROG = "model-server"
RUNTIME_ERROR, USAGE_ERROR, INTERRUPTED = 1, 2, 130


class CommandFailed(SystemExit):
    """A failure reported as one line on stderr, ending the process with `status`.

    A SystemExit, like argparse's usage errors: raised out of `main()` it exits with `status` and no
    traceback; str() is the line (the message, prefixed with the program name)."""

    def __init__(self, message: str, status: int = RUNTIME_ERROR) -> None:
        super().__init__(status)
        self.message = f"{PROG}: {' '.join(message.split())}"  # one line, whatever the library wrote

    def __str__(self) -> str:
        return self.message


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """Every `Settings` field as a flag (generated, so flags, environment variables and defaults agree)."""
    group = parser.add_argument_group("settings (flag > MODEL_SERVER_* environment variable > default)")
    for name, field in Settings.model_fields.items():
        default = field.default.value if hasattr(field.default, "value") else field.default
        flags = [f"--{setting.replace('_', '-')}" for setting in (name, *_old_names(name, field))]
        group.add_argument(*flags, dest=f"setting_{name}", default=argparse.SUPPRESS,
                           metavar=name.upper(),
                           help=f"{field.description or ''} [env MODEL_SERVER_{name.upper()}; default {default}]")


def _old_names(name: str, field) -> list[str]:
    """The earlier names a renamed setting still accepts (its validation aliases), e.g. cache_path."""
    choices = getattr(field.validation_alias, "choices", None) or []
    return [choice for choice in choices
            if isinstance(choice, str) and choice != name and not choice.upper().startswith("MODEL_SERVER_")]


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings: flags given, then MODEL_SERVER_* variables, then defaults; invalid ones exit 2."""
    overrides = {key.removeprefix("setting_"): value for key, value in vars(args).items()
                 if key.startswith("setting_")}
    try:
        # Structured settings (e.g. extra_translation_models) are given as JSON, as in the environment.
        for name, value in overrides.items():
            if Settings.model_fields[name].annotation in (dict[str, str], list[str]):
                overrides[name] = json.loads(value)
        return Settings(**overrides)
    except json.JSONDecodeError as exc:
        raise CommandFailed(f"invalid settings: a JSON value does not parse: {exc}; give structured settings as "
                            """JSON, e.g. --extra-translation-models '{"big": "/models/tc-big"}'""",
                            USAGE_ERROR) from None
    except ValidationError as exc:
        raise failure_for(exc) from None


def load_services(settings: Settings, *, summarization: bool | None = None):
    from model_server.services import Services

    return Services.load(settings, summarization=summarization)


def read_input(source: str | None) -> str:
    """A file named on the command line, or stdin for None or '-'."""
    return sys.stdin.read() if source in (None, "-") else read_utf8(source)


def prepare_output(path: Path | str, *, directory: bool = False) -> Path:
    """Create the output directory (or a file's parent) now, so an unwritable output fails before a long run
    instead of after it."""
    path = Path(path)
    (path if directory else path.parent).mkdir(parents=True, exist_ok=True)
    if not directory and path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    where = path if directory else path.parent
    if not os.access(where, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(where))
    return path


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace, *, debug: bool) -> int:
    """The error boundary: run `command`; any failure becomes one `CommandFailed` line on stderr."""
    try:
        return command(args)
    except BaseException as exc:  # noqa: BLE001 - every failure, even a bug, ends as one line
        if isinstance(exc, SystemExit) and not isinstance(exc, CommandFailed):
            raise  # an exit a command chose (uvicorn's, argparse's)
        failure = failure_for(exc)
        if debug:
            traceback.print_exception(exc)
        print(failure.message, file=sys.stderr)
        raise failure from None


def failure_for(exc: BaseException) -> CommandFailed:
    """The one line (and exit status) for an exception: the problem and how to fix it."""
    if isinstance(exc, CommandFailed):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return CommandFailed("interrupted", INTERRUPTED)
    if isinstance(exc, ServiceError):
        return CommandFailed(exc.message)
    if isinstance(exc, ValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        if exc.title != Settings.__name__:
            return CommandFailed(f"invalid {exc.title}: {problems}")
        return CommandFailed(f"invalid settings: {problems}; correct the flag or MODEL_SERVER_* variable named "
                             "(--help lists every setting)", USAGE_ERROR)
    hub = _hub_failure(exc)
    if hub is not None:
        return hub
    if isinstance(exc, OSError):
        return CommandFailed(_describe_os_error(exc))
    if isinstance(exc, UnicodeDecodeError):  # stdin; named files go through read_utf8
        return CommandFailed(f"the input is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8, "
                             "e.g. `iconv -f WINDOWS-1256 -t UTF-8 FILE > fixed.txt`")
    if isinstance(exc, ValueError):  # loaders and the evaluation harness say what is wrong in their message
        return CommandFailed(str(exc))
    return CommandFailed(f"unexpected {type(exc).__name__}: {exc}. This is a bug: rerun with --debug for the "
                         "traceback and report it")


# errno -> what to do about it; the OSError itself says what went wrong and where.
_OS_ERROR_FIXES = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EROFS: "choose a path on a writable file system",
    errno.EISDIR: "give a file, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory; choose another path",
    errno.EEXIST: "a file is in the way; remove it or choose another path",
    errno.ENOSPC: "free some disk space or choose another location",
}


def _describe_os_error(exc: OSError) -> str:
    where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    reason = exc.strerror or str(exc)
    fix = _OS_ERROR_FIXES.get(exc.errno, "check the path and try again")
    return f"{where}: {reason}; {fix}" if where else f"{reason}; {fix}"


def _hub_failure(exc: BaseException) -> CommandFailed | None:
    """huggingface_hub's errors (multi-line, about URLs) as one line that says what to do."""
    if not type(exc).__module__.startswith("huggingface_hub"):
        return None
    from huggingface_hub import errors

    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        return CommandFailed("the Hugging Face hub cannot be reached from this machine (no network, or "
                             "HF_HUB_OFFLINE is set) and the files are not in its cache; run the command on a machine "
                             "with network and copy the result here, or use a local model directory")
    if isinstance(exc, errors.GatedRepoError):
        return CommandFailed(f"the model is gated on the Hugging Face hub ({first_line}); accept its terms on "
                             "huggingface.co and set HF_TOKEN")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return CommandFailed(f"no such model on the Hugging Face hub, or it is private ({first_line}); check the id "
                             "(e.g. Helsinki-NLP/opus-mt-ar-en), or set HF_TOKEN for a private model")
    if isinstance(exc, errors.RevisionNotFoundError):
        return CommandFailed(f"no such revision on the Hugging Face hub ({first_line}); check --revision")
    if isinstance(exc, errors.HFValidationError):
        return CommandFailed(f"not a valid hub id ({first_line}); give ORG/NAME, e.g. Helsinki-NLP/opus-mt-ar-en")
    if isinstance(exc, errors.HfHubHTTPError):
        return CommandFailed(f"the Hugging Face hub refused the request ({first_line}); retry later, or check "
                             "HF_TOKEN")
    return None


def debug_flag() -> argparse.ArgumentParser:
    """`--debug`, accepted before the sub-command (global) and after it (a parent of every sub-parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the full traceback of a failure (default: one line)")
    return parent
