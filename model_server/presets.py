"""Prompt presets: one YAML file per preset in `prompts_dir`, validated once at start-up.

A preset fixes how the summarizer is driven: an optional prefix (instruction) put before the input, an
optional cap on input tokens per chunk, and the decoding settings. A request picks a preset by name; the
name and version are echoed with every summary, so a stored summary says how it was made.

A bad preset stops start-up with one message naming the file and the field, e.g.
`prompts/summary-brief.yaml: generation.num_beams: Input should be greater than 0`.
The schema is described in prompts/README.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model_server.backends.base import GenerationOptions
from model_server.errors import ServiceError

log = logging.getLogger(__name__)

PRESET_SUFFIXES = (".yaml", ".yml")
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent


class GenerationSettings(BaseModel):
    """Decoding settings of a preset (beam search; sampling is never used)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_beams: int = Field(4, gt=0, le=16, description="beam size")
    max_new_tokens: int = Field(84, gt=0, le=1024, description="most tokens in one summary")
    min_new_tokens: int = Field(0, ge=0, le=1024,
                                description="fewest tokens in one summary (EOS suppressed until then)")
    no_repeat_ngram_size: int = Field(0, ge=0, le=16, description="forbid repeating any n-gram of this size (0 = off)")
    length_penalty: float = Field(1.0, ge=-5, le=5, description="beam score exponent on length: >1 longer, <1 shorter")
    repetition_penalty: float = Field(1.0, gt=0, le=5, description="1.0 = off")

    @model_validator(mode="after")
    def _min_below_max(self) -> "GenerationSettings":
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens must not exceed max_new_tokens")
        return self

    def options(self) -> GenerationOptions:
        return GenerationOptions(num_beams=self.num_beams, max_new_tokens=self.max_new_tokens,
                                 length_penalty=self.length_penalty, no_repeat_ngram_size=self.no_repeat_ngram_size,
                                 repetition_penalty=self.repetition_penalty, min_new_tokens=self.min_new_tokens)


class SummaryPreset(BaseModel):
    """One preset file. Unknown fields are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="the name requests use; must equal the file name without .yaml")
    version: str = Field(min_length=1, description="bump when the preset's output changes; echoed with every summary")
    task: Literal["summarization"]
    description: str = ""
    model: str | None = Field(None, description="the model the preset was written for (a note: the served model is "
                                                "the summarization_model setting; a mismatch is logged at start-up)")
    prefix: str = Field("", description="text put before every model input, e.g. an instruction (XLSum uses none)")
    max_input_tokens: int | None = Field(None, ge=16, description="cap on tokens per model input (prefix included); "
                                                                  "default: the model's limit")
    generation: GenerationSettings = Field(default_factory=GenerationSettings)

    @model_validator(mode="before")
    @classmethod
    def _version_as_text(cls, data):
        # `version: 1` in YAML is an int; versions are labels, keep them as text.
        if isinstance(data, dict) and isinstance(data.get("version"), (int, float)) and not isinstance(
                data.get("version"), bool):
            data = {**data, "version": str(data["version"])}
        return data


@dataclass(frozen=True)
class LoadedPreset:
    preset: SummaryPreset
    path: Path

    @property
    def name(self) -> str:
        return self.preset.name


def default_prompts_dir() -> Path:
    """./prompts when it exists (the Docker image's WORKDIR holds one), else the one next to the package."""
    here = Path("prompts")
    return here if here.is_dir() else _PACKAGE_PARENT / "prompts"


def display_path(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _invalid(path: Path, problem: str) -> ServiceError:
    return ServiceError("invalid_preset", f"{display_path(path)}: {problem}")


def load_preset(path: Path) -> LoadedPreset:
    """Parse and validate one preset file; ServiceError('invalid_preset') names the file and the field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _invalid(path, f"cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise _invalid(path, f"not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise _invalid(path, "expected a mapping of fields (name, version, task, generation, ...)")
    try:
        preset = SummaryPreset.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc'])) or 'preset'}: {error['msg']}"
                             for error in exc.errors())
        raise _invalid(path, problems) from None
    if preset.name != path.stem:
        raise _invalid(path, f"name: '{preset.name}' must equal the file name '{path.stem}'")
    return LoadedPreset(preset=preset, path=path)


class PresetCatalog:
    """Every preset of a directory, by name, plus the default one."""

    def __init__(self, presets: dict[str, LoadedPreset], default: str, directory: Path) -> None:
        if default not in presets:
            raise ServiceError("invalid_preset", f"default_summary_preset '{default}' is not a preset in "
                               f"{display_path(directory)} (there: {', '.join(sorted(presets)) or 'none'}); set "
                               f"MODEL_SERVER_DEFAULT_SUMMARY_PRESET to one of them")
        self.presets = presets
        self.default = default
        self.directory = directory

    @classmethod
    def load(cls, directory: Path, default: str) -> "PresetCatalog":
        if not directory.is_dir():
            raise ServiceError("invalid_preset", f"prompts_dir {display_path(directory)} is not a directory "
                               f"(set MODEL_SERVER_PROMPTS_DIR to the directory of preset files)")
        presets: dict[str, LoadedPreset] = {}
        for path in sorted(p for p in directory.iterdir() if p.suffix in PRESET_SUFFIXES and p.is_file()):
            loaded = load_preset(path)
            if loaded.name in presets:
                other = display_path(presets[loaded.name].path)
                raise _invalid(path, f"name: '{loaded.name}' is also defined by {other}")
            presets[loaded.name] = loaded
        return cls(presets, default, directory)

    def get(self, name: str | None) -> SummaryPreset:
        """The named preset (the default when None); ServiceError('unknown_preset') otherwise."""
        loaded = self.presets.get(self.default if name is None else name)
        if loaded is None:
            raise ServiceError("unknown_preset", f"no preset named '{name}'; available: {', '.join(self.names())}")
        return loaded.preset

    def path_of(self, name: str) -> Path:
        return self.presets[name].path

    def names(self) -> list[str]:
        return sorted(self.presets)

    def check_model(self, served_model: str) -> None:
        """Log presets written for another model than the one served (a note, not an error)."""
        for loaded in self.presets.values():
            if loaded.preset.model and loaded.preset.model != served_model:
                log.warning("preset %s was written for model %s; the summarizer serves %s",
                            loaded.name, loaded.preset.model, served_model)
