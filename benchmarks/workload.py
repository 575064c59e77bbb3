"""The fixed inputs every benchmark phase uses: the sample article and its sentences.

Segmentation is the service's own (`model_server.text`), so offline batches, single-sentence requests
and whole-article requests all contain exactly the segments the service would translate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model_server.text import normalize_text, segment
from model_server.tuning import batch_of

SAMPLE_ARTICLE = Path(__file__).resolve().parents[1] / "model_server" / "data" / "libya-russia-ar.txt"
SAMPLE_ARTICLE_EN = SAMPLE_ARTICLE.with_name("libya-russia-en.txt")  # its line-aligned English reference


@dataclass(frozen=True)
class Workload:
    article: str                 # the raw sample article, sent as one request in the article mode
    sentences: tuple[str, ...]   # its sentences, in order; single-sentence requests cycle through them

    def batch(self, size: int) -> list[str]:
        """A fixed batch as representative of the article as `size` allows (`model_server.tuning.batch_of`: the
        same batches `model-server tune` times), so offline rows and online levels see the same lengths."""
        return batch_of(self.sentences, size)

    def idle_sentence(self, count_tokens) -> str:
        """The sentence of median source length: what the idle-latency probe sends every time."""
        by_length = sorted(self.sentences, key=lambda s: (count_tokens(s), s))
        return by_length[len(by_length) // 2]


def load_workload(path: Path = SAMPLE_ARTICLE) -> Workload:
    article = path.read_text(encoding="utf-8")
    sentences = tuple(s.text for p in segment(normalize_text(article)) for s in p.sentences)
    if not sentences:
        raise ValueError(f"no sentences in {path}")
    return Workload(article=article, sentences=sentences)
