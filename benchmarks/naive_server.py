"""The naive baseline: a translation server written the way people write one without model_server.

Per request: split the text into sentences, tokenize them and run that request's sentences through the
engine in one call (no cross-request batching). A plain `def` endpoint (FastAPI runs it in its thread
pool); `--workers` calls run at once at most (a semaphore), the others wait. Same model, device,
precision, beam size and forced decode length as the service, and the service's own segmenter, so it
does exactly the same model work per request. Two engines, one server:

- `--engine torch`: `model.generate()`, one call at a time (`--workers 1`), the hand-written torch server.
- `--engine ctranslate2`: one `Translator.translate_batch` per request, as LibreTranslate/Argos do, on the
  converted model directory the service's CTranslate2 backend uses (`--ct2-model`), with the thread layout
  given: `--workers` request threads (LibreTranslate's waitress threads), `--inter-threads` calls the
  translator runs in parallel and `--intra-threads` threads per call.

    python -m benchmarks.naive_server --model DIR --port 8001 --decode-tokens 40
    python -m benchmarks.naive_server --engine ctranslate2 --model DIR --ct2-model DIR-ct2-int8 \\
        --workers 8 --inter-threads 2 --intra-threads 1
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Callable, Sequence

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from transformers import AutoTokenizer, GenerationConfig

from model_server.text import normalize_text, segment

ENGINES = ("torch", "ctranslate2")

# One engine call on one request's sentences: (sentences, num_beams) -> (translations, generated tokens).
Translate = Callable[[Sequence[str], int], tuple[list[str], int]]


class Body(BaseModel):
    text: str | None = None
    texts: list[str] | None = None
    num_beams: int | None = Field(None, ge=1, le=16)  # as the service: per request, else the server's default


def torch_engine(model_dir: str, tokenizer, *, device: str, dtype: str, decode_tokens: int) -> Translate:
    """`model.generate()` on the request's sentences (padded to the longest)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval().to(device)
    pad_id = model.generation_config.pad_token_id

    def translate(sentences: Sequence[str], num_beams: int) -> tuple[list[str], int]:
        encoded = tokenizer(list(sentences), return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            output = model.generate(**encoded, num_beams=num_beams, do_sample=False,
                                    max_new_tokens=decode_tokens, min_new_tokens=decode_tokens).cpu()
        generated = int((output[:, 1:] != pad_id).sum())  # drop decoder start; padding after EOS
        return tokenizer.batch_decode(output, skip_special_tokens=True), generated

    return translate


def ctranslate2_engine(model_dir: str, tokenizer, *, ct2_model: str, device: str, compute_type: str,
                       inter_threads: int, intra_threads: int, decode_tokens: int) -> Translate:
    """One `translate_batch` per request. A model that forces EOS as its last token (opus-mt) decodes one
    step less and counts the EOS, as the service's CTranslate2 backend does, so both do the same work."""
    import ctranslate2

    translator = ctranslate2.Translator(ct2_model, device=device, compute_type=compute_type,
                                        inter_threads=inter_threads, intra_threads=intra_threads)
    forced_eos = GenerationConfig.from_pretrained(model_dir).forced_eos_token_id is not None
    steps = max(decode_tokens - 1, 1) if forced_eos else decode_tokens
    tokenizer_lock = threading.Lock()  # a fast tokenizer used from several threads at once can fail

    def translate(sentences: Sequence[str], num_beams: int) -> tuple[list[str], int]:
        with tokenizer_lock:
            sources = [tokenizer.convert_ids_to_tokens(tokenizer(s)["input_ids"]) for s in sentences]
        results = translator.translate_batch(sources, beam_size=num_beams, max_decoding_length=steps,
                                             min_decoding_length=steps, max_input_length=0, return_end_token=True)
        hypotheses = [result.hypotheses[0] for result in results]
        generated = sum(len(h) + (1 if forced_eos and len(h) >= steps else 0) for h in hypotheses)
        with tokenizer_lock:
            texts = [tokenizer.decode(tokenizer.convert_tokens_to_ids(h), skip_special_tokens=True)
                     for h in hypotheses]
        return texts, generated

    return translate


def create_app(translate: Translate, *, num_beams: int, workers: int = 1) -> FastAPI:
    """The naive HTTP server around one engine; at most `workers` engine calls at once."""
    slots = threading.BoundedSemaphore(workers)
    app = FastAPI(title="naive translation server (benchmark baseline)")

    @app.get("/readyz")
    def readyz() -> dict:
        return {"status": "ready"}

    @app.post("/translate")
    def translate_endpoint(body: Body) -> dict:
        started = time.perf_counter()
        texts = [body.text] if body.text is not None else body.texts or []
        sentences = [s.text for text in texts for p in segment(normalize_text(text)) for s in p.sentences]
        if not sentences:
            raise HTTPException(400, "empty text")
        with slots:
            translations, generated = translate(sentences, body.num_beams or num_beams)
        return {"translation": " ".join(t.strip() for t in translations), "segments": len(sentences),
                "generated_tokens": generated,
                "timing_ms": {"total": round((time.perf_counter() - started) * 1000, 2)}}

    return app


def build_engine(args: argparse.Namespace, tokenizer) -> Translate:
    if args.engine == "ctranslate2":
        if not args.ct2_model:
            raise SystemExit("naive_server: --engine ctranslate2 needs --ct2-model")
        return ctranslate2_engine(args.model, tokenizer, ct2_model=args.ct2_model, device=args.device,
                                  compute_type=args.compute_type, inter_threads=args.inter_threads,
                                  intra_threads=args.intra_threads, decode_tokens=args.decode_tokens)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return torch_engine(args.model, tokenizer, device=args.device, dtype=args.dtype, decode_tokens=args.decode_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=ENGINES, default="torch")
    parser.add_argument("--model", required=True, help="model directory (tokenizer; the torch weights)")
    parser.add_argument("--ct2-model", help="converted CTranslate2 model directory (--engine ctranslate2)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="torch dtype")
    parser.add_argument("--compute-type", default="int8", help="CTranslate2 compute type")
    parser.add_argument("--decode-tokens", type=int, default=40)
    parser.add_argument("--num-beams", type=int, default=1, help="beam size when a request names none")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=1, help="engine calls at once (request threads)")
    parser.add_argument("--inter-threads", type=int, default=1, help="CTranslate2 inter_threads")
    parser.add_argument("--intra-threads", type=int, default=1, help="CTranslate2 intra_threads")
    args = parser.parse_args()
    if args.workers < 1:
        raise SystemExit("naive_server: --workers must be at least 1")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    app = create_app(build_engine(args, tokenizer), num_beams=args.num_beams, workers=args.workers)
    # uvicorn's thread pool (anyio's, 40 threads) is larger than any --workers: the semaphore is the limit.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
