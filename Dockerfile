# model-server: Arabic->English translation service.
#
# CPU image (default):
#   docker build -t model-server .
# CUDA image: a base image that already has a CUDA build of torch, and skip the CPU torch install:
#   docker build -t model-server:cuda \
#     --build-arg BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime --build-arg TORCH_SPEC=skip .
# Models are mounted (-v /srv/models:/models) or baked in at build time (translation and summaries):
#   docker build --build-arg PREFETCH_MODELS="Helsinki-NLP/opus-mt-ar-en csebuetnlp/mT5_multilingual_XLSum" \
#     -t model-server:models .
# (Translation only: add -e MODEL_SERVER_SUMMARIZATION_ENABLED=false to `docker run`.)
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"
ARG EXTRAS="ct2"
ARG PREFETCH_MODELS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/home/app/.cache/huggingface \
    MODEL_SERVER_HOST=0.0.0.0 \
    MODEL_SERVER_PORT=8000 \
    MODEL_SERVER_MODELS_DIR=/models

WORKDIR /app
RUN if [ "$TORCH_SPEC" != "skip" ]; then pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"; fi
COPY pyproject.toml README.md ./
COPY model_server ./model_server
COPY prompts ./prompts
RUN pip install ".[${EXTRAS}]"

RUN useradd --create-home --uid 10001 app && mkdir -p /models && chown app /models
USER app
# Optional: bake models into the image so it starts without network.
RUN for model in $PREFETCH_MODELS; do model-server download "$model" --models-dir /models; done

EXPOSE 8000
VOLUME ["/models"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MODEL_SERVER_PORT', '8000'), timeout=4)" || exit 1

ENTRYPOINT ["model-server"]
CMD ["serve"]
