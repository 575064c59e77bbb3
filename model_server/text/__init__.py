"""Arabic text pipeline: normalization, paragraph/sentence segmentation, chunking.

Typical use::

    text = normalize_text(raw)
    for paragraph in segment(text):
        for sentence in paragraph.sentences:
            pieces = chunk_sentence(sentence.text, count_tokens, max_tokens)
"""

from model_server.text.chunk import chunk_sentence
from model_server.text.normalize import arabic_ratio, has_arabic, normalize_text
from model_server.text.segment import (
    PARAGRAPH_SEPARATOR,
    Paragraph,
    Sentence,
    paragraph_spans,
    segment,
)

__all__ = [
    "PARAGRAPH_SEPARATOR",
    "Paragraph",
    "Sentence",
    "arabic_ratio",
    "chunk_sentence",
    "has_arabic",
    "normalize_text",
    "paragraph_spans",
    "segment",
]
