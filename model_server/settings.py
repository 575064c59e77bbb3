"""The one settings object of the service.

Precedence (lowest to highest): defaults declared here, `MODEL_SERVER_*` environment variables,
command-line flags of `model-server serve` (generated from these fields). Contradictory options fail
at start-up with a message that names the setting.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_server.webhooks import AllowList

DEFAULT_TRANSLATION_MODEL = "Helsinki-NLP/opus-mt-ar-en"
DEFAULT_SUMMARIZATION_MODEL = "csebuetnlp/mT5_multilingual_XLSum"


class Profile(str, Enum):
    default = "default"
    # Offline smoke profile: builds (if needed) and serves the tiny test model. Not a translator.
    tiny = "tiny"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class DType(str, Enum):
    auto = "auto"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class LogFormat(str, Enum):
    json = "json"
    text = "text"


class Backend(str, Enum):
    torch = "torch"
    ctranslate2 = "ctranslate2"


class TorchAttention(str, Enum):
    auto = "auto"
    eager = "eager"
    sdpa = "sdpa"


class CT2ComputeType(str, Enum):
    """CTranslate2 compute types (docs/ctranslate2.md). `auto` = int8 on cpu (int8_bfloat16 where the CPU has
    native bf16 and CTranslate2 offers it there), int8_float16 on cuda (the mT5 summarizer: int8_bfloat16, or
    int8_float32 where the GPU lacks bfloat16). Chosen per machine: model_server/backends/hardware.py."""

    auto = "auto"
    int8 = "int8"
    int8_float32 = "int8_float32"
    int8_float16 = "int8_float16"
    int8_bfloat16 = "int8_bfloat16"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


class CT2BatchType(str, Enum):
    examples = "examples"
    tokens = "tokens"


class SummaryStrategy(str, Enum):
    """How an article gets its English summary (the Arabic one is always mT5 on the Arabic body)."""

    # mT5 summarizes the Arabic body; Marian translates that summary (cheapest: one summary pass).
    translate_summary = "translate-summary"
    # mT5 summarizes the Arabic body, and separately the English translation of the body.
    summarize_both = "summarize-both"


class NonArabic(str, Enum):
    """What happens to a text that is not (mostly) Arabic script."""

    reject = "reject"            # error not_arabic (400, or the text's own error entry with `texts`)
    passthrough = "passthrough"  # returned unchanged with "passthrough": true (nothing translated)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODEL_SERVER_", extra="ignore", use_enum_values=False)

    # --- models ---
    profile: Profile = Field(Profile.default, description="'tiny' serves the repo-built test model (offline smoke runs)")
    translation_model: str = Field(
        DEFAULT_TRANSLATION_MODEL, description="hub id or local directory of a MarianMT ar->en model"
    )
    extra_translation_models: dict[str, str] = Field(
        default_factory=dict, description="more translation models served at the same time, each with its own "
        "queue, chosen per request with `model`: JSON {name: hub id or directory}, e.g. "
        '{"big": "Helsinki-NLP/opus-mt-tc-big-ar-en"}')
    models_dir: Path = Field(
        Path("models"), description="where `download` stores models and where hub ids are looked up first"
    )
    backend: Backend = Field(Backend.torch, description="inference engine of the translation models: torch | "
                             "ctranslate2")
    device: Device = Field(Device.auto, description="auto picks cuda when available, else cpu")
    dtype: DType = Field(
        DType.auto, description="auto = bfloat16 on cpus with native bf16 (avx512_bf16 or amx_bf16 flags), else "
        "float32; float16 on cuda (the mT5 summarizer: bfloat16, or float32 without it); /v1/models says what was "
        "chosen and why. bfloat16 allowed on both, float16 cuda only"
    )
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's own choice)")
    torch_attention: TorchAttention = Field(
        TorchAttention.auto, description="torch attention kernels: eager (plain matrix products) or sdpa (torch's "
        "scaled_dot_product_attention); auto = the one `model-server tune` measured faster for this model and "
        "machine, else sdpa"
    )
    malloc_arena_max: int = Field(
        2, ge=0, le=64, description="glibc malloc arenas for the whole process (0: glibc's default, up to 8 per "
        "core): each arena keeps the memory beam search freed, so the default let a 300 MB opus-mt server reach "
        "2.7 GB; serve, worker and translate re-execute themselves once with MALLOC_ARENA_MAX set, unless the "
        "environment sets it (model_server/allocator.py)")

    restrict_output_vocab: bool = Field(
        True, description="Marian models with a separate target.spm (opus-mt) decode into their target vocabulary "
        "only: the target pieces and the special tokens, not the source-language pieces of the joint vocab.json "
        "(about half of opus-mt-ar-en's 62,834 ids), on torch and on CTranslate2 (conversions since this setting; "
        "older ones decode unrestricted). Scores are then log-probs normalised over the target vocabulary, what "
        "the model was trained to emit. /v1/models reports output_vocab_size. No effect on mT5 or joint-vocabulary models"
    )

    # --- CTranslate2 backend (backend=ctranslate2; docs/ctranslate2.md) ---
    ct2_compute_type: CT2ComputeType = Field(
        CT2ComputeType.auto, description="CTranslate2 compute type (replaces dtype): auto = int8 on cpu (int8_bfloat16 "
        "where the cpu has native bf16 and CTranslate2 offers it), "
        "int8_float16 on cuda (int8_bfloat16 for the summarizer: mT5 overflows float16); float16, bfloat16 and "
        "their int8_ variants need cuda"
    )
    ct2_model_dir: Path | None = Field(
        None, description="a directory written by `model-server convert` from translation_model; refused if it "
        "was converted from another model"
    )
    ct2_convert_on_start: bool = Field(
        False, description="convert every model served on ctranslate2 that has no converted directory set "
        "(translation_model without ct2_model_dir, summarization_model without ct2_summarization_model_dir) into "
        "ct2_cache_dir at start-up unless a conversion of the same files and quantization is already there (needs "
        "the source model; conversion takes seconds to minutes)"
    )
    ct2_cache_dir: Path | None = Field(
        None, description="where ct2_convert_on_start keeps conversions (default: MODELS_DIR/ct2-cache)"
    )
    ct2_intra_threads: int = Field(
        0, ge=0, description="CTranslate2 threads per replica (0 = auto: 1 up to 4 usable cores, 2 up to 16, then 4)")
    ct2_inter_threads: int = Field(
        0, ge=0, description="CTranslate2 replicas (one copy of the weights): on cpu the service runs one batch "
        "per replica at once, each with an equal share of the batch limits (0 = auto: usable cores / "
        "ct2_intra_threads on cpu, 1 on cuda)"
    )
    ct2_max_batch_size: int = Field(
        0, ge=0, description="CTranslate2's own split of each batch (0 = an even split over the ct2_inter_threads "
        "replicas: the dynamic batcher already plans batches with max_batch_size/max_batch_tokens)"
    )
    ct2_batch_type: CT2BatchType = Field(
        CT2BatchType.examples, description="unit of ct2_max_batch_size: examples | tokens"
    )
    ct2_beam_patience: float = Field(
        2.0, gt=0, le=8, description="beam search stops after beams x patience finished hypotheses; 2 picks what "
        "the torch backend picks, 1 (CTranslate2's default) is a little faster and may differ on near-ties"
    )

    # --- generation ---
    num_beams: int | None = Field(None, ge=1, le=16, description="default beam size (default: the model's own)")
    max_new_tokens: int = Field(256, ge=1, le=2048, description="hard cap on generated tokens per sentence")
    max_input_tokens: int | None = Field(
        None, ge=8, description="longest segment sent to the model, in tokens (default: the model's limit)"
    )
    min_new_tokens: int = Field(
        0, ge=0, le=2048, description="BENCHMARK-ONLY: generate at least this many tokens per segment (EOS "
        "suppressed until then); with min_new_tokens = max_new_tokens every segment decodes exactly that many "
        "tokens, so benchmark runs are comparable. 0 (default) = off; never set it for real translation"
    )

    # --- quality ---
    low_score_threshold: float = Field(
        -1.5, le=0, description="sentences whose mean token log-probability is below this get the low_score flag")
    retry_suspect_sentences: bool = Field(
        True, description="re-generate sentences flagged repetition/truncated once with safer decoding")

    # --- translation cache (README.md "Translation cache") ---
    cache_enabled: bool = Field(
        True, description="remember each sentence's translation (per model and decoding options) so re-sent "
        "articles only translate what changed")
    state_path: Path | None = Field(
        None, validation_alias=AliasChoices("state_path", "cache_path", "MODEL_SERVER_STATE_PATH",
                                            "MODEL_SERVER_CACHE_PATH"),  # its old name, still accepted
        description="SQLite file of the embedded state: cache, glossaries, jobs (default: "
        "MODELS_DIR/model-server.sqlite3; old name cache_path)")
    cache_url: str | None = Field(
        None, description="redis://host:6379/0 puts the cache in Redis instead (needs the `redis` extra)")
    # --- shared state for several replicas (docs/scaling.md) ---
    state_url: str | None = Field(
        None, description="redis://host:6379/0 moves glossaries, rate limits, idempotency keys and job records "
        "to Redis, shared by every replica (needs the `scale` extra); unset: one process, SQLite")
    state_timeout_s: float = Field(
        2.0, gt=0, le=60, description="connect and command timeout of the state Redis; past it a request that "
        "needs shared state gets 503 state_unavailable")
    cache_max_entries: int = Field(
        200_000, ge=1, description="most cached sentences in the SQLite cache; least recently used go first")

    # --- glossaries (README.md "Newsroom CMS"; every cap answers its own error code) ---
    glossaries_max_count: int = Field(
        1000, ge=1, description="most glossaries stored; creating one more gets 409 too_many_glossaries")
    glossary_max_entries: int = Field(
        5000, ge=1, description="most entries in one glossary; more gets 413 glossary_too_many_entries")
    glossary_max_term_chars: int = Field(
        100, ge=1, le=10_000, description="longest Arabic term (characters as sent); longer gets 413 "
        "glossary_term_too_long")
    glossary_max_rendering_chars: int = Field(
        500, ge=1, le=100_000, description="longest English rendering (characters as sent); longer gets 413 "
        "glossary_rendering_too_long")

    # --- asynchronous jobs and webhooks (docs/newsroom.md) ---
    jobs_max_concurrent: int = Field(2, ge=1, le=64, description="jobs translated at the same time; others wait queued")
    jobs_max_attempts: int = Field(
        3, ge=1, le=20, description="runs a job gets: a transient failure (queue_full, timeout, shutting_down) or a "
        "crash while it ran (found 'running' at start-up) spends one; then it fails for good")
    jobs_retry_backoff_s: float = Field(
        5.0, ge=0, le=3600, description="wait before a job's 2nd run after a transient failure; doubles after each")
    jobs_retention_s: float = Field(
        604_800.0, gt=0, description="a finished job keeps its request and result this long (default 7 days), then "
        "reads 'expired'; after twice this long it is deleted")
    # With state_url: jobs run as chunk messages on Dramatiq's Redis broker, consumed by `model-server worker`.
    jobs_chunk_texts: int = Field(
        8, ge=1, le=1000, description="texts per chunk message of a queued job (state_url); a chunk is what a "
        "worker redoes when it dies, and what one worker translates at once")
    jobs_worker_concurrent_chunks: int = Field(
        4, ge=1, le=256, description="chunks one `model-server worker` translates at the same time (they share "
        "batches in its bulk lane)")
    jobs_worker_heartbeat_timeout_s: float = Field(
        30.0, ge=1, le=3600, description="a worker silent this long is dead: the messages it held go back to "
        "the queue")
    jobs_dead_letter_ttl_s: float = Field(
        604_800.0, gt=0, description="how long a chunk or webhook message that ran out of attempts stays in "
        "its dead-letter queue (default 7 days)")
    worker_health_port: int = Field(
        8081, ge=0, le=65535, description="`model-server worker` answers /healthz, /readyz and /metrics on this "
        "port, bound on `host` (for probes and Prometheus; no API); 0 = off")
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key signing job webhooks (X-Model-Server-Signature); callback_url needs it")
    webhook_max_attempts: int = Field(5, ge=1, le=20, description="deliveries tried per webhook before giving up")
    webhook_backoff_s: float = Field(
        2.0, ge=0, le=600, description="wait before the 2nd delivery attempt; doubles after each failure")
    webhook_timeout_s: float = Field(
        10.0, gt=0, le=300, description="total time of one webhook delivery attempt (resolve, connect, send, answer)")
    webhook_allowed_hosts: str = Field(
        "", description="comma-separated host names, IP addresses and networks (CIDR) a callback_url may reach "
        "although they are loopback, private, link-local or metadata addresses (refused otherwise), e.g. "
        "'cms.internal,10.20.0.0/16'")
    webhook_resolve_timeout_s: float = Field(
        2.0, gt=0, le=60, description="how long resolving a callback_url's host may take at submission")

    # --- summarization (mT5 + prompt presets; README.md "POST /summarize", prompts/README.md) ---
    summarization_enabled: bool = Field(
        True, description="load the summarization model and serve /summarize and /v1/articles; false = translation "
        "only (those endpoints answer 503 summarization_disabled)")
    summarization_model: str = Field(
        DEFAULT_SUMMARIZATION_MODEL, description="hub id or local directory of an mT5 summarization model")
    summary_strategy: SummaryStrategy = Field(
        SummaryStrategy.translate_summary, description="default English-summary strategy of /v1/articles: "
        "translate-summary (Marian translates the Arabic summary) | summarize-both (mT5 summarizes the translation)")
    default_summary_preset: str = Field(
        "summary-xlsum", description="preset used when a request names none (a file <name>.yaml in prompts_dir)")
    prompts_dir: Path | None = Field(
        None, description="directory of preset YAML files, validated at start-up (default: ./prompts when it exists, "
        "else the prompts/ directory next to the installed package)")
    summarization_backend: Backend = Field(
        Backend.torch, description="inference engine of the summarizer: torch | ctranslate2. Separate from backend "
        "because mT5 needs its own conversion (ct2_summarization_model_dir or ct2_convert_on_start); on cuda "
        "ct2_compute_type=auto runs it in int8_bfloat16 (int8_float32 without bfloat16), never float16")
    ct2_summarization_model_dir: Path | None = Field(
        None, description="a directory written by `model-server convert` from summarization_model, for "
        "summarization_backend=ctranslate2; refused if it was converted from another model")
    summary_max_input_tokens: int | None = Field(
        None, ge=32, description="longest input given to the summarizer, in tokens (default: the model's limit, 512 "
        "for mT5); longer articles are summarized in chunks of whole paragraphs, then the summaries are summarized")

    # --- batching ---
    # A batch's cost is what the engine computes: a segment decoded with N beams is N hypotheses. Segments
    # keep their meaning (greedy batches are capped by max_batch_size as before); beam batches are capped by
    # max_batch_hypotheses. Measured on 2 CPU cores (issue 13), random real-shape opus-mt: torch beam 4 was
    # fastest at 16-32 segments (64-128 hypotheses) and fell at 64; CTranslate2 beam 4 was best around 32
    # segments (and took 786 MiB there against ~1,130 at 64); greedy was fastest at 64 segments.
    max_batch_size: int = Field(64, ge=1, description="most segments in one model call, whatever the decoding")
    max_batch_hypotheses: int = Field(
        128, ge=1, description="most hypotheses (segments x num_beams) in one model call: with the defaults a "
        "greedy batch holds up to 64 segments (max_batch_size), a beam-4 batch up to 32, a beam-2 batch 64"
    )
    max_batch_tokens: int = Field(
        16384, ge=1, description="padded token budget of one model call: hypotheses (segments x num_beams) x longest "
        "input; for greedy decoding, segments x longest input"
    )
    rebatch_wait_fraction: float = Field(
        0.25, ge=0, le=1, description="after a batch, wait at most this fraction of its duration (and 2 s) for its "
        "clients' next requests before starting a partial batch; keeps closed-loop clients in one batch (0 = off)"
    )
    rebatch_gap_ms: float = Field(
        300.0, ge=0, description="while waiting for the last batch's clients, stop once no segment arrived for "
        "this long (they are not coming back)"
    )
    # 2 ms: a lone request pays it in full (the idle latency); a burst is still collected, as each arrival
    # extends the wait (64 HTTP clients started together arrived ~0.4 ms apart).
    max_wait_ms: float = Field(2.0, ge=0, description="how long a non-full batch waits for more segments, counted "
                               "from the latest arrival while segments keep arriving (see max_collect_ms)")
    max_collect_ms: float = Field(
        50.0, ge=0, description="while segments keep arriving less than max_wait_ms apart, a non-full batch keeps "
        "collecting them, but starts at the latest this long after its oldest segment (at most max_wait_ms: "
        "counted from the oldest segment only)"
    )
    # `model-server tune` measures the batch limits per model, engine, decoding and machine (model_server/tuning.py);
    # the server reads its entry and uses those limits wherever the three limits above were not set explicitly.
    tuning_file: Path | None = Field(
        None, description="JSON file of measured batch limits, one entry per model/engine/decoding/machine "
        "fingerprint, written by `model-server tune` (default: MODELS_DIR/tuning.json)"
    )
    autotune: bool = Field(
        False, description="at start-up, run the tuning (under a minute on small models, minutes on real ones) when "
        "the tuning file has no entry for this model/machine, and write it"
    )
    tune_max_batch_latency_s: float = Field(
        5.0, gt=0, description="tuning picks no batch size whose one model call takes longer than this"
    )
    max_queue_segments: int = Field(
        4096, ge=1, description="segments waiting across all requests; beyond it new work gets 503"
    )
    request_timeout_s: float = Field(300.0, gt=0, description="a request still unfinished after this gets 504")
    stream_keepalive_s: float = Field(
        15.0, gt=0, description="a streamed response (Accept: text/event-stream) sends a keep-alive comment after "
        "this long without an event, so proxies keep the connection open while a long sentence is translated"
    )
    prepare_workers: int = Field(
        2, ge=1, description="threads for per-request CPU work off the event loop (normalize, clean, segment, chunk, "
        "HTML parsing and alignment, glossary matching; model_server/cpu.py)"
    )

    # --- HTTP / limits ---
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="port to bind (0 = any free port)")
    max_body_bytes: int = Field(
        2_000_000, ge=1024, description="largest request body, of any method (declared or streamed); bigger gets 413")
    max_drain_bytes: int = Field(
        16_000_000, ge=0, description="a refused request's body (413, 401, 429) is read and discarded up to this many "
        "bytes before the answer, so clients that send the whole body before reading (urllib, requests) read the "
        "refusal instead of a connection reset; a longer body gets the answer at once and the connection closes")
    max_text_chars: int = Field(100_000, ge=1, description="longest single text; longer gets 413")
    max_texts_per_request: int = Field(128, ge=1, description="most texts in one request; more gets 413")
    min_arabic_ratio: float = Field(
        0.3, ge=0, le=1, description="share of letters that must be Arabic script, else the text is rejected"
    )
    non_arabic: NonArabic = Field(
        NonArabic.reject, description="a text below min_arabic_ratio: reject (error not_arabic) | passthrough "
        "(returned unchanged, flagged passthrough=true)")
    set_translated_direction: bool = Field(
        True, description="translated markup (HTML, DeepL tag_handling, .docx) says it is English: dir=\"rtl\" -> "
        "\"ltr\" and lang=\"ar\" -> \"en\" on translated elements, right-to-left paragraph settings off in .docx; "
        "false keeps the attributes as they were (for CMSs that rewrite them themselves)")
    document_max_bytes: int = Field(
        10_000_000, ge=1024, description="largest document upload (.docx, .html, .txt) of /v1/jobs and DeepL "
        "/v2/document; bigger gets 413 document_too_large")
    document_max_unpacked_bytes: int = Field(
        100_000_000, ge=1024, description="most bytes a .docx may unpack to (all its zip members together): a "
        "zip bomb gets 400 invalid_document before it is unpacked")
    document_max_pieces: int = Field(
        20_000, ge=1, description="most pieces (paragraphs, table cells, ...) one document is translated in; more "
        "gets 413 document_too_many_pieces (each piece is a job text: this bounds a job's stored request and result)")
    log_level: str = Field("info", description="uvicorn/app log level")

    # --- operations: API keys, rate limits, logs (docs/operations.md) ---
    api_keys_file: Path | None = Field(
        None, description="file of API keys, one a line: 'key', 'name:key' or 'name:sha256:<hex>'; "
        "setting it (or api_keys) turns authentication on")
    api_keys: SecretStr | None = Field(
        None, description="comma-separated API keys in the same forms as api_keys_file (for containers: "
        "MODEL_SERVER_API_KEYS)")
    metrics_require_key: bool = Field(False, description="GET /metrics also needs an API key (needs keys set)")
    rate_limit_requests_per_minute: int = Field(
        0, ge=0, description="requests per minute per API key (per client IP when auth is off); 0 = off")
    rate_limit_chars_per_minute: int = Field(
        0, ge=0, description="text characters per minute per API key (per client IP when auth is off); 0 = off")
    char_quota_per_period: int = Field(
        0, ge=0, description="text characters one API key may have translated per char_quota_period (all of them "
        "together when auth is off), counted in the shared state; past it 403 quota_exceeded (DeepL: 456) until "
        "the next period. 0 = no limit (still counted: DeepL GET /v2/usage)")
    char_quota_period: Literal["month", "day"] = Field(
        "month", description="the quota's period, calendar UTC: month (as DeepL bills) or day")
    max_inflight_per_key: int = Field(
        128, ge=0, description="requests of one API key (per client IP when auth is off) in flight at once; more get "
        "429 too_many_inflight. The default leaves room for a 64-client benchmark from one address; 0 = off")
    log_format: LogFormat = Field(LogFormat.json, description="json (one object a line) | text")
    log_request_bodies: bool = Field(
        False, description="DEBUG ONLY: put request bodies (article text) into the access log")

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: str) -> str:
        AllowList.parse(value)  # a bad entry fails at start-up, naming it
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> "Settings":
        if self.dtype is DType.float16 and self.device is Device.cpu:
            raise ValueError("dtype=float16 needs device=cuda (on cpu use float32 or bfloat16)")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens (benchmark-only) must not exceed max_new_tokens")
        if self.max_batch_tokens < self.max_batch_size and self.max_batch_tokens < 64:
            raise ValueError("max_batch_tokens is smaller than one segment can be; raise it")
        self._check_ct2()
        # The keys themselves are parsed (and a bad key file refused, naming its line) by
        # model_server.api.auth.load_api_keys at start-up: the settings know only whether keys are set.
        if self.metrics_require_key and not self.auth_enabled:
            raise ValueError("metrics_require_key needs API keys (set api_keys_file or api_keys)")
        return self

    @property
    def auth_enabled(self) -> bool:
        """API keys are configured (api_keys_file or api_keys): every protected endpoint needs one."""
        return self.api_keys_file is not None or self.api_keys is not None

    def _check_ct2(self) -> None:
        if self.device is Device.cpu and self.ct2_compute_type.value in {"float16", "int8_float16", "bfloat16",
                                                                         "int8_bfloat16"}:
            raise ValueError(f"ct2_compute_type={self.ct2_compute_type.value} needs device=cuda "
                             "(on cpu use int8, int8_float32 or float32)")
        if self.backend is Backend.ctranslate2 and self.ct2_model_dir is None and not self.ct2_convert_on_start:
            raise ValueError("backend=ctranslate2 needs ct2_model_dir (made by `model-server convert`) "
                             "or ct2_convert_on_start=true")
        if self.summarization_enabled:
            self.check_summarizer_engine()

    def check_summarizer_engine(self) -> None:
        """The summarizer's engine has what it needs to load. Validation runs it when summarization is
        enabled; the loader always does (CLI summary commands load the summarizer regardless)."""
        if (self.summarization_backend is Backend.ctranslate2 and self.ct2_summarization_model_dir is None
                and not self.ct2_convert_on_start):
            raise ValueError("summarization_backend=ctranslate2 needs ct2_summarization_model_dir (made by "
                             "`model-server convert` from summarization_model) or ct2_convert_on_start=true "
                             "(or summarization_backend=torch)")

    def tuning_path(self) -> Path:
        return self.tuning_file if self.tuning_file is not None else self.models_dir / "tuning.json"

    def state_file(self) -> Path:
        return self.state_path if self.state_path is not None else self.models_dir / "model-server.sqlite3"

    def cache_file(self) -> Path:
        """The old name of `state_file` (the file always held more than the cache)."""
        return self.state_file()

    @property
    def cache_path(self) -> Path | None:
        """The old name of `state_path`."""
        return self.state_path

    def ct2_cache_path(self) -> Path:
        return self.ct2_cache_dir if self.ct2_cache_dir is not None else self.models_dir / "ct2-cache"

    def translation_model_source(self) -> str:
        """The model to load: the tiny test model dir in the tiny profile, else the configured one."""
        if self.profile is Profile.tiny:
            return str(self.tiny_marian_dir())
        return self.translation_model

    def summarization_model_source(self) -> str:
        """The summarizer to load: the tiny test mT5 dir in the tiny profile, else the configured one."""
        if self.profile is Profile.tiny:
            return str(self.tiny_mt5_dir())
        return self.summarization_model

    def prompts_path(self) -> Path:
        if self.prompts_dir is not None:
            return self.prompts_dir
        from model_server.presets import default_prompts_dir

        return default_prompts_dir()

    def tiny_marian_dir(self) -> Path:
        return self.models_dir / "tiny-marian-ar-en"

    def tiny_mt5_dir(self) -> Path:
        return self.models_dir / "tiny-mt5-sum"
