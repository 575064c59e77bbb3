"""Evaluation harness: translate a line-aligned test set through the service's own pipeline and score it.

Reports sacreBLEU BLEU and chrF (with their signatures, so numbers are comparable across papers and
runs), quality-flag rates and throughput, for one or several variants (models, backends, settings) side by
side in one run. Used by `model-server eval`.
"""

from __future__ import annotations

import asyncio
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from model_server.batching.batcher import Lane
from model_server.files import read_utf8
from model_server.settings import Settings

LINES_PER_CALL = 128  # keeps one call's segments far below the queue limit on large test sets


@dataclass(frozen=True)
class Variant:
    """A named set of setting overrides, e.g. `big:translation_model=Helsinki-NLP/opus-mt-tc-big-ar-en`."""

    name: str
    overrides: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> "Variant":
        head, colon, rest = spec.partition(":")
        name, assignments = (head, rest) if colon and "=" not in head else ("", spec)
        overrides = {}
        for assignment in filter(None, (part.strip() for part in assignments.split(","))):
            key, sep, value = assignment.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"variant {spec!r}: expected key=value pairs, got {assignment!r}")
            setting = key.strip().replace("-", "_")
            if setting not in Settings.model_fields:
                raise ValueError(f"variant {spec!r}: {key.strip()!r} is not a setting; use a setting name such as "
                                 "backend or translation_model (model-server eval --help lists them)")
            overrides[setting] = value.strip()
        return cls(name=name or ",".join(f"{k}={v}" for k, v in overrides.items()) or "default",
                   overrides=overrides)


def read_lines(path: Path) -> list[str]:
    return read_utf8(path).splitlines()


async def _translate_lines(services, lines: Sequence[str]) -> tuple[list[str], list, float]:
    """Hypotheses (one per line, '' for a line that could not be translated), results, seconds."""
    pipeline = services.translator
    options = pipeline.options()
    hypotheses: list[str] = []
    results = []
    started = time.perf_counter()
    for start in range(0, len(lines), LINES_PER_CALL):
        batch, _ = await pipeline.translate(lines[start:start + LINES_PER_CALL], options, lane=Lane.bulk)
        results.extend(batch)
        hypotheses.extend(result.translation or "" for result in batch)
    return hypotheses, results, time.perf_counter() - started


def score_translations(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError as exc:  # an optional extra: only the evaluation harness needs it
        raise ValueError("BLEU/chrF need sacrebleu: pip install 'model-server[eval]'") from exc

    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": round(bleu_score.score, 2), "bleu_signature": str(bleu.get_signature()),
            "chrf": round(chrf_score.score, 2), "chrf_signature": str(chrf.get_signature())}


def flag_rates(results: Sequence) -> dict[str, Any]:
    sentences = [s for result in results if result.error is None for s in result.sentences]
    counts: dict[str, int] = {}
    for sentence in sentences:
        for flag in sentence.flags:
            counts[flag] = counts.get(flag, 0) + 1
    total = max(len(sentences), 1)
    return {"sentences": len(sentences),
            "needs_review_rate": round(sum(s.needs_review for s in sentences) / total, 4),
            "flag_rates": {flag: round(count / total, 4) for flag, count in sorted(counts.items())},
            "failed_lines": sum(result.error is not None for result in results)}


def evaluate_variant(variant: Variant, base: Settings, sources: Sequence[str], references: Sequence[str]) -> dict:
    from model_server.services import Services

    # No translation cache: a re-run would time cache hits instead of the model (a variant may turn it on).
    settings = Settings(**{**base.model_dump(), "cache_enabled": False, **variant.overrides})
    services = Services.load(settings, summarization=False)  # translation only

    async def run():
        services.start()
        try:
            return await _translate_lines(services, sources)
        finally:
            await services.close()

    hypotheses, results, seconds = asyncio.run(run())
    info = services.translation.backend.info
    return {
        "variant": variant.name, "overrides": variant.overrides, "model": info.model_dump(),
        **score_translations(hypotheses, references), **flag_rates(results),
        "seconds": round(seconds, 3), "lines_per_s": round(len(sources) / seconds, 2) if seconds else None,
        "hypotheses": hypotheses,
    }


def evaluate(source: Path, reference: Path, variants: Sequence[Variant], base: Settings) -> dict[str, Any]:
    sources, references = read_lines(source), read_lines(reference)
    if len(sources) != len(references):
        raise ValueError(f"{source} has {len(sources)} lines but {reference} has {len(references)}: "
                         "the files must be line-aligned (line N of the reference translates line N of the source)")
    return {"source": str(source), "reference": str(reference), "lines": len(sources),
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "variants": [evaluate_variant(v, base, sources, references) for v in variants or [Variant("default")]]}


def render_markdown(report: dict[str, Any]) -> str:
    rows = ["| variant | model | backend | BLEU | chrF | needs review | flags | lines/s |",
            "|---|---|---|---:|---:|---:|---|---:|"]
    for v in report["variants"]:
        flags = ", ".join(f"{k} {rate:.0%}" for k, rate in v["flag_rates"].items()) or "-"
        test = " (TEST MODEL)" if v["model"]["test_model"] else ""
        rows.append(f"| {v['variant']} | {v['model']['name']}{test} | {v['model']['backend']} | {v['bleu']:.2f} | "
                    f"{v['chrf']:.2f} | {v['needs_review_rate']:.0%} | {flags} | {v['lines_per_s']} |")
    signatures = {(v["bleu_signature"], v["chrf_signature"]) for v in report["variants"]}
    notes = [f"BLEU signature: `{b}`  \nchrF signature: `{c}`" for b, c in sorted(signatures)]
    return "\n".join([f"{report['lines']} lines: `{report['source']}` vs `{report['reference']}`", "",
                      *rows, "", *notes]) + "\n"


# --- summaries ---------------------------------------------------------------------------------

class _WordTokenizer:
    """ROUGE tokenizer for any script: rouge-score's default keeps only [a-z0-9] and would drop Arabic."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        import re

        return re.findall(r"\w+", text.lower())


def rouge_scores(summaries: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (x100) over pairs, with a script-neutral word tokenizer."""
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:  # an optional extra: only the evaluation harness needs it
        raise ValueError("ROUGE needs the rouge-score package: pip install 'model-server[eval]'") from exc
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_WordTokenizer())
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for summary, reference in zip(summaries, references):
        for name, score in scorer.score(reference, summary).items():
            totals[name] += score.fmeasure
    count = max(len(summaries), 1)
    return {name: round(100 * total / count, 2) for name, total in totals.items()}


def read_summary_pairs(path: Path) -> list[tuple[str, str]]:
    """JSON Lines, one {"document": ..., "summary": ...} object per line."""
    import json

    pairs = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            pairs.append((item["document"], item["summary"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path}:{number}: expected a JSON object with 'document' and 'summary'; give one "
                             '{"document": "...", "summary": "..."} object per line (JSON Lines)') from None
    return pairs


def evaluate_summaries(path: Path, base: Settings, *, lang: str = "ar", preset: str | None = None) -> dict[str, Any]:
    """Summarize each document through the service's summarization pipeline and score it with ROUGE."""
    from model_server.services import Services

    pairs = read_summary_pairs(path)
    settings = Settings(**{**base.model_dump(), "cache_enabled": False, "summarization_enabled": True})
    services = Services.load(settings)

    async def run() -> tuple[list[str], float]:
        services.start()
        try:
            started = time.perf_counter()
            outputs = [await services.summarizer.summarize(doc, lang=lang, preset=preset, lane=Lane.bulk)
                       for doc, _ in pairs]
            return [o.summary.text for o in outputs], time.perf_counter() - started
        finally:
            await services.close()

    summaries, seconds = asyncio.run(run())
    return {"file": str(path), "documents": len(pairs), "lang": lang, "preset": preset or settings.default_summary_preset,
            "model": services.summarization.backend.info.model_dump(),
            **rouge_scores(summaries, [ref for _, ref in pairs]),
            "seconds": round(seconds, 3), "summaries": summaries}
