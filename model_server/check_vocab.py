"""`model-server check-vocab`: do two ways of running a model give the same outputs on a corpus?

The step a user runs once on real weights before switching: the original vs the trimmed summarizer
(`trim-vocab`), float32 vs bfloat16, or any other pair of settings. Side A is the settings as given; side
B is A with overrides (an evaluation `Variant`: any setting by name, e.g. `summarization_model=/models/mt5-ar-en`
or `dtype=bfloat16`), so a new switch such as a translation output-vocabulary setting is compared by
naming it, with no change here. Each input is generated on both sides with the same decoding options;
an output matches when its text and token count are equal. The report has the exact-match rate, the
score differences (mean log-probability per token) and every differing output.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from model_server.backends.base import Generated, GenerationOptions, Seq2SeqBackend
from model_server.evaluation import Variant
from model_server.settings import Settings

TASKS = ("summarization", "translation")
# The setting naming each task's model: what `--against` overrides.
MODEL_SETTING = {"summarization": "summarization_model", "translation": "translation_model"}
SAMPLE_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_FILES = {"summarization": ("libya-russia-ar.txt", "libya-russia-en.txt"),
                "translation": ("libya-russia-ar.txt",)}
DEFAULT_BATCH_SIZE = 8


def sample_sentences(task: str) -> list[str]:
    """The sample article's sentences (Arabic, plus English for summaries): the default corpus."""
    from model_server.text.segment import segment

    texts = [(SAMPLE_DIR / name).read_text(encoding="utf-8") for name in SAMPLE_FILES[task]]
    return [sentence.text for text in texts for paragraph in segment(text) for sentence in paragraph.sentences]


def load_backend(settings: Settings, task: str) -> Seq2SeqBackend:
    from model_server.services import load_summarization_backend, load_translation_backend

    return load_summarization_backend(settings) if task == "summarization" else load_translation_backend(settings)


def generate_all(backend: Seq2SeqBackend, inputs: Sequence[str], options: GenerationOptions,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> list[Generated]:
    outputs: list[Generated] = []
    for start in range(0, len(inputs), batch_size):
        outputs.extend(backend.generate(inputs[start:start + batch_size], options))
    return outputs


def compare(inputs: Sequence[str], a: Sequence[Generated], b: Sequence[Generated]) -> dict:
    """Exact-match rate, score differences and every differing output of two runs over `inputs`."""
    if not len(inputs) == len(a) == len(b):
        raise ValueError(f"{len(inputs)} inputs but {len(a)} and {len(b)} outputs")
    score_diffs = [abs(x.score - y.score) for x, y in zip(a, b)]
    differing = [{"index": i, "input": text, "a": _output(x), "b": _output(y)}
                 for i, (text, x, y) in enumerate(zip(inputs, a, b))
                 if (x.text, x.num_tokens) != (y.text, y.num_tokens)]
    matches = len(inputs) - len(differing)
    return {
        "inputs": len(inputs),
        "exact_matches": matches,
        "exact_match_rate": matches / len(inputs) if inputs else 1.0,
        "score_abs_diff": {"max": max(score_diffs, default=0.0),
                           "mean": sum(score_diffs) / len(score_diffs) if score_diffs else 0.0},
        "token_count_diffs": sum(x.num_tokens != y.num_tokens for x, y in zip(a, b)),
        "differing": differing,
    }


def check(base: Settings, a: Variant, b: Variant, *, task: str, inputs: Sequence[str],
          batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """Run `inputs` through side A, then side B (one model loaded at a time), and compare. Both decode with
    side A's model's own options, its `num_beams` setting (when set) and its `max_new_tokens`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    runs = []
    options = None
    for side in (a, b):
        settings = Settings(**{**base.model_dump(), **side.overrides})
        backend = load_backend(settings, task)
        try:
            if options is None:  # A decides the decoding options; B decodes the same way
                defaults = backend.default_options()
                options = GenerationOptions(num_beams=settings.num_beams or defaults.num_beams,
                                            max_new_tokens=settings.max_new_tokens,
                                            length_penalty=defaults.length_penalty,
                                            no_repeat_ngram_size=defaults.no_repeat_ngram_size,
                                            repetition_penalty=defaults.repetition_penalty)
            runs.append((side, backend.info, generate_all(backend, inputs, options, batch_size)))
        finally:
            backend.close()
    report = compare(inputs, runs[0][2], runs[1][2])
    return {"task": task, "options": asdict(options),
            **{key: {"label": side.name, "overrides": side.overrides, "model": _model(info)}
               for key, (side, info, _) in zip(("a", "b"), runs)},
            **report}


def render_text(report: dict) -> str:
    """The report for a terminal: the summary lines, then each differing output."""
    lines = [f"check-vocab ({report['task']}, beam {report['options']['num_beams']}): {report['inputs']} inputs"]
    for key in ("a", "b"):
        side = report[key]
        model = side["model"]
        label = "" if side["label"] == key.upper() else f" [{side['label']}]"
        lines.append(f"  {key.upper()}: {model['name']} ({model['backend']}, {model['dtype']}, vocabulary "
                     f"{model['vocab_size']}){label}")
    lines += [f"exact matches: {report['exact_matches']}/{report['inputs']} ({report['exact_match_rate']:.1%})",
              f"score |A-B|: max {report['score_abs_diff']['max']:.3g}, mean {report['score_abs_diff']['mean']:.3g}"
              f"; token counts differ on {report['token_count_diffs']}"]
    for diff in report["differing"]:
        lines += [f"--- input {diff['index']}: {diff['input']}",
                  f"  A ({diff['a']['num_tokens']} tokens, score {diff['a']['score']:.6f}): {diff['a']['text']}",
                  f"  B ({diff['b']['num_tokens']} tokens, score {diff['b']['score']:.6f}): {diff['b']['text']}"]
    return "\n".join(lines) + "\n"


def _output(generated: Generated) -> dict:
    return {"text": generated.text, "num_tokens": generated.num_tokens, "score": generated.score}


def _model(info) -> dict:
    return {"name": info.name, "backend": info.backend, "dtype": info.dtype,
            "vocab_size": info.extra.get("vocab_size"), "test_model": info.test_model}
