"""Document formats around the translation pipeline: scraped-text cleanup (`clean`) and HTML (`format="html"`).

`translate_documents` is what every endpoint that takes whole documents calls (POST /translate and the
DeepL/LibreTranslate adapters): it turns each document into the plain texts the pipeline translates,
makes ONE `TranslationPipeline.translate` call for all of them (so the blocks of every document share
batches), and turns the results back into one `TextResult` per document.
"""

from __future__ import annotations

from enum import Enum
from typing import Sequence

from model_server.backends.base import GenerationOptions
from model_server.batching.batcher import Lane
from model_server.glossary import Glossary
from model_server.pipeline import Timings, TranslationPipeline
from model_server.results import DroppedLine, TextResult
from model_server.streaming import OnFinished
from model_server.text.cleanup import Cleaned, clean_scraped


class DocumentFormat(str, Enum):
    text = "text"
    html = "html"
    xml = "xml"   # DeepL's tag_handling=xml; same rules as html, parsed and written as XML


async def translate_documents(pipeline: TranslationPipeline, documents: Sequence[str], options: GenerationOptions,
                              *, lane: Lane = Lane.interactive, format: DocumentFormat = DocumentFormat.text,
                              clean: bool = False, skip_tags: frozenset[str] = frozenset(),
                              glossary: Glossary | None = None, on_sentences: OnFinished | None = None,
                              ) -> tuple[list[TextResult], Timings]:
    """Translate whole documents; one result per document, in order (errors per document, never shared).
    `on_sentences` (streaming: `TranslationPipeline.translate`) is for plain text only: markup is
    translated as one whole document."""
    if format is not DocumentFormat.text:
        if on_sentences is not None:
            raise ValueError("markup is not streamed sentence by sentence")
        from model_server.html import translate_markup  # lxml is only imported when markup is translated

        return await translate_markup(pipeline, documents, options, lane=lane, xml=format is DocumentFormat.xml,
                                      skip_tags=skip_tags, glossary=glossary)
    extra: dict = {"glossary": glossary} if glossary is not None else {}  # model_server.glossary
    if on_sentences is not None:
        extra["on_sentences"] = on_sentences
    if not clean:
        return await pipeline.translate(documents, options, lane=lane, **extra)
    cleaned = await pipeline.cpu.run(_clean_all, documents)  # a scan of every line: off the event loop
    results, timings = await pipeline.translate([c.text for c in cleaned], options, lane=lane, **extra)
    for result, item in zip(results, cleaned):
        result.dropped = [DroppedLine(line=d.line, text=d.text, reason=d.reason) for d in item.dropped]
    return results, timings


def _clean_all(documents: Sequence[str]) -> list[Cleaned]:
    return [clean_scraped(document) for document in documents]
