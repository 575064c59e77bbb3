"""The naive baseline: a translation server written the way people write one without model_server.

Per request: split the text into sentences, tokenize them, call `model.generate()` on that request's
sentences only (no cross-request batching), with one lock around the model so concurrent requests run
one after another. A plain `def` endpoint (FastAPI runs it in its thread pool). Same model directory,
device, dtype, beam size and forced decode length as the service, and the service's own segmenter, so
it does exactly the same model work per request.

    python -m benchmarks.naive_server --model DIR --port 8001 --decode-tokens 40
"""

from __future__ import annotations

import argparse
import threading
import time

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from model_server.text import normalize_text, segment


class Body(BaseModel):
    text: str | None = None
    texts: list[str] | None = None


def create_app(model_dir: str, *, device: str, dtype: str, decode_tokens: int, num_beams: int) -> FastAPI:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval().to(device)
    pad_id = model.generation_config.pad_token_id
    lock = threading.Lock()
    app = FastAPI(title="naive translation server (benchmark baseline)")

    @app.get("/readyz")
    def readyz() -> dict:
        return {"status": "ready"}

    @app.post("/translate")
    def translate(body: Body) -> dict:
        started = time.perf_counter()
        texts = [body.text] if body.text is not None else body.texts or []
        sentences = [s.text for text in texts for p in segment(normalize_text(text)) for s in p.sentences]
        if not sentences:
            raise HTTPException(400, "empty text")
        with lock:
            encoded = tokenizer(sentences, return_tensors="pt", padding=True).to(device)
            with torch.inference_mode():
                output = model.generate(**encoded, num_beams=num_beams, do_sample=False,
                                        max_new_tokens=decode_tokens, min_new_tokens=decode_tokens)
            output = output.cpu()
        translations = tokenizer.batch_decode(output, skip_special_tokens=True)
        generated = int((output[:, 1:] != pad_id).sum())  # drop decoder start; padding after EOS
        return {"translation": " ".join(t.strip() for t in translations), "segments": len(sentences),
                "generated_tokens": generated,
                "timing_ms": {"total": round((time.perf_counter() - started) * 1000, 2)}}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--decode-tokens", type=int, default=40)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    app = create_app(args.model, device=args.device, dtype=args.dtype, decode_tokens=args.decode_tokens,
                     num_beams=args.num_beams)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
