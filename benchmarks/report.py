"""Results -> ratios and targets, a markdown table, and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

# (name, description, threshold, direction): direction ">=" means the value must be at least threshold.
# The first three are the batching targets (the first backend's service, torch by default); the last two
# compare the CTranslate2 service with the torch one and with raw translate_batch.
TARGETS = (
    ("service_over_best_offline", "service @ max clients, single sentences / best offline batch (tokens/s)", 0.9, ">="),
    ("service_over_naive", "service / naive @ max clients, single sentences (tokens/s)", 10.0, ">="),
    ("idle_http_over_direct", "idle single-sentence HTTP latency / direct backend.generate (median)", 1.10, "<="),
    ("ct2_service_over_torch_service", "ctranslate2 service / torch service @ max clients, single sentences "
     "(tokens/s)", 2.5, ">="),
    ("ct2_service_over_raw_ct2", "ctranslate2 service @ max clients / best raw translate_batch (tokens/s)", 0.9, ">="),
    ("ct2_service_over_best_offline", "ctranslate2 service @ max clients / best ctranslate2 backend batch "
     "(tokens/s)", 0.9, ">="),
    ("ct2_service_share_of_ceiling", "ctranslate2 service over the naive ctranslate2 server @ max clients / the "
     "engine's ceiling over it (best ctranslate2 backend batch / naive ctranslate2 @ max clients)", 0.9, ">="),
    # One client, from the idle phase: both servers' rounds interleaved, medians (the online 1-client levels
    # run one after the other, minutes apart on a machine whose speed drifts, the naive one on 1 request).
    ("ct2_idle_service_over_naive_ct2", "ctranslate2 service / naive ctranslate2 server, latency at 1 client "
     "(idle phase: median of the per-round ratios, rounds interleaved)", 1.05, "<="),
    ("torch_auto_dtype_over_other", "torch backend in the chosen dtype / in the other candidate dtype, best batch "
     "(tokens/s)", 1.0, ">="),
    ("torch_backend_over_raw_every_batch", "torch backend / raw model.generate at its worst batch size (tokens/s, "
     "same batches, interleaved)", 0.95, ">="),
    ("torch_service_peak_rss_gib", "peak RSS of the torch service (GiB, VmHWM after its last load level)", 2.0, "<="),
)


def _level(levels: list[dict[str, Any]] | None, concurrency: int) -> dict[str, Any] | None:
    return next((lv for lv in levels or [] if lv["concurrency"] == concurrency), None)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def primary_backend(results: dict[str, Any]) -> str:
    """The backend the batching targets are measured on: torch when measured, else the first one."""
    backends = results.get("backends") or ["torch"]
    return "torch" if "torch" in backends else backends[0]


def _tok(level: dict[str, Any] | None) -> float | None:
    return level["target_tokens_per_s"] if level and level.get("ok") else None


def _best(section: dict[str, Any] | None) -> float | None:
    return ((section or {}).get("best") or {}).get("target_tokens_per_s")


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    online = results.get("online") or {}
    offline_all, raw_all = results.get("offline") or {}, results.get("raw") or {}
    primary = primary_backend(results)
    service = online.get(f"service-{primary}") or {}
    naive = online.get("naive") or {}
    offline = offline_all.get(primary) or {}
    idle = results.get("idle") or {}
    ratios: dict[str, Any] = {"primary_backend": primary}

    single_levels = [lv["concurrency"] for lv in service.get("single") or []]
    if single_levels:
        top = max(single_levels)
        ratios["max_concurrency"] = top
        ratios["service_over_best_offline"] = ratio(_tok(_level(service.get("single"), top)), _best(offline))
        ratios["service_over_naive"] = ratio(_tok(_level(service.get("single"), top)),
                                              _tok(_level(naive.get("single"), top)))

        # The same two throughput ratios per CPU-second (CPU runs only): robust to other jobs on the machine.
        def per_cpu(level: dict[str, Any] | None) -> float | None:
            return level.get("segments_per_server_cpu_s") if level and level.get("ok") else None

        ratios["service_over_best_offline_per_cpu_s"] = ratio(
            per_cpu(_level(service.get("single"), top)), (offline.get("best_per_cpu_s") or {}).get("segments_per_cpu_s"))
        ratios["service_over_naive_per_cpu_s"] = ratio(per_cpu(_level(service.get("single"), top)),
                                                        per_cpu(_level(naive.get("single"), top)))
    article_levels = [lv["concurrency"] for lv in service.get("article") or []]
    if article_levels:
        top = max(article_levels)
        ratios["max_article_concurrency"] = top
        ratios["service_over_naive_articles"] = ratio(_tok(_level(service.get("article"), top)),
                                                       _tok(_level(naive.get("article"), top)))
    rows = offline.get("rows") or []
    one = next((r for r in rows if r["batch_size"] == 1), None)
    if one and offline.get("best"):
        # The ceiling for any batching server over per-request generate() on this machine.
        ratios["best_offline_over_batch1"] = ratio(offline["best"]["target_tokens_per_s"], one["target_tokens_per_s"])
    direct = (idle.get(f"direct-{primary}") or {}).get("median_ms")
    ratios["idle_http_over_direct"] = ratio((idle.get(f"service-{primary}_http") or {}).get("median_ms"), direct)
    ratios["idle_naive_http_over_direct"] = ratio((idle.get("naive_http") or {}).get("median_ms"), direct)
    ratios["idle_http_over_direct_paired"] = (idle.get(f"service-{primary}_http") or {}).get("paired_ratio_to_direct")
    # Backend layer cost: the service's backend / its raw engine call, best batch each, and at every batch size.
    for backend in offline_all:
        ratios[f"{backend}_backend_over_raw"] = ratio(_best(offline_all.get(backend)), _best(raw_all.get(backend)))
        ratios[f"{backend}_backend_over_raw_every_batch"] = _worst_batch_ratio(offline_all.get(backend),
                                                                              raw_all.get(backend))
    ct2, torch_service = online.get("service-ctranslate2") or {}, online.get("service-torch") or {}
    ct2_levels = [lv["concurrency"] for lv in ct2.get("single") or []]
    if ct2_levels:
        top = max(ct2_levels)
        ct2_tok = _tok(_level(ct2.get("single"), top))
        ratios["ct2_max_concurrency"] = top
        ratios["ct2_service_over_torch_service"] = ratio(ct2_tok, _tok(_level(torch_service.get("single"), top)))
        ratios["ct2_service_over_raw_ct2"] = ratio(ct2_tok, _best(raw_all.get("ctranslate2")))
        ratios["ct2_service_over_best_offline"] = ratio(ct2_tok, _best(offline_all.get("ctranslate2")))
        ratios["ct2_idle_http_over_direct_paired"] = (idle.get("service-ctranslate2_http") or {}).get(
            "paired_ratio_to_direct")
    ratios["raw_ct2_over_raw_torch"] = ratio(_best(raw_all.get("ctranslate2")), _best(raw_all.get("torch")))
    memory = results.get("memory") or {}
    torch_peak = (memory.get("service-torch") or {}).get("peak_rss_mib")
    ratios["torch_service_peak_rss_gib"] = round(torch_peak / 1024, 3) if torch_peak else None
    ratios["ct2_peak_rss_over_torch"] = ratio((memory.get("service-ctranslate2") or {}).get("peak_rss_mib"),
                                               (memory.get("service-torch") or {}).get("peak_rss_mib"))
    ratios.update(_naive_ct2_ratios(online, offline_all))
    # The same 1-client comparison from the idle phase (interleaved rounds, one fixed sentence).
    ratios["ct2_idle_service_over_naive_ct2"] = _paired_median(idle.get("service-ctranslate2_http"),
                                                               idle.get("naive-ctranslate2_http"))
    ratios["torch_auto_dtype_over_other"] = _dtype_ratio(results.get("torch_dtypes"))
    return ratios


def _paired_median(path: dict[str, Any] | None, other: dict[str, Any] | None) -> float | None:
    """Median over the idle rounds of path / other, each round's two samples taken one right after the
    other: the machine's drift over the phase cancels out, which a ratio of the two medians keeps."""
    pairs = [a / b for a, b in zip((path or {}).get("ms") or [], (other or {}).get("ms") or []) if b > 0]
    return round(statistics.median(pairs), 4) if pairs else None


def _worst_batch_ratio(backend: dict[str, Any] | None, raw: dict[str, Any] | None) -> float | None:
    """The lowest backend / raw tokens/s over the batch sizes both measured (the layer's cost at its worst)."""
    raw_rows = {row["batch_size"]: row for row in (raw or {}).get("rows") or []}
    ratios = [ratio(row["target_tokens_per_s"], raw_rows[row["batch_size"]]["target_tokens_per_s"])
              for row in (backend or {}).get("rows") or [] if row["batch_size"] in raw_rows]
    ratios = [r for r in ratios if r is not None]
    return min(ratios) if ratios else None


def _naive_ct2_ratios(online: dict[str, Any], offline_all: dict[str, Any]) -> dict[str, Any]:
    """The CTranslate2 service against the naive one-translate_batch-per-request server: the engine's own
    batching gain over it (the ceiling), the service's gain, their quotient, and latency at 1 client."""
    naive, service = online.get("naive-ctranslate2") or {}, online.get("service-ctranslate2") or {}
    levels = [lv["concurrency"] for lv in naive.get("single") or []]
    if not levels or not service.get("single"):
        return {}
    top = max(levels)
    naive_tok = _tok(_level(naive.get("single"), top))
    ceiling = ratio(_best(offline_all.get("ctranslate2")), naive_tok)
    gain = ratio(_tok(_level(service.get("single"), top)), naive_tok)
    one_service, one_naive = _level(service.get("single"), 1), _level(naive.get("single"), 1)
    return {"ct2_engine_ceiling_over_naive_ct2": ceiling, "ct2_service_over_naive_ct2": gain,
            "ct2_service_share_of_ceiling": ratio(gain, ceiling),
            "ct2_service_over_naive_ct2_latency_1_client": ratio((one_service or {}).get("latency_p50_ms"),
                                                                  (one_naive or {}).get("latency_p50_ms"))}


def _dtype_ratio(dtypes: dict[str, Any] | None) -> float | None:
    """Best batch of the torch backend in the dtype dtype=auto chose over the best other candidate's."""
    if not dtypes:
        return None
    chosen = dtypes["chosen"]
    others = [_best(section) for dtype, section in dtypes["sections"].items() if dtype != chosen]
    return ratio(_best(dtypes["sections"].get(chosen)), max((o for o in others if o), default=None))


def decoding_view(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A second decoding set (e.g. "greedy") shaped like a whole run's results, so compute_ratios and the
    tables read it as they read the headline: its offline and raw rows, its single-sentence online levels
    (online mode "single_<name>" on the same servers), no articles, idle or memory."""
    section = results.get(name)
    if not section:
        return None
    online = {server: {"kind": value["kind"], "backend": value["backend"],
                       "single": value.get(f"single_{name}") or []}
              for server, value in (results.get("online") or {}).items() if isinstance(value, dict)}
    return {"backends": results.get("backends"), "offline": section.get("offline") or {},
            "raw": section.get("raw") or {}, "torch_dtypes": section.get("torch_dtypes"), "online": online}


def evaluate_targets(ratios: dict[str, Any], targets: Sequence[tuple[str, str, float, str]] = TARGETS
                     ) -> list[dict[str, Any]]:
    """Each (ratio name, description, threshold, ">=" or "<=") target with its value and whether it is met."""
    out = []
    for name, description, threshold, direction in targets:
        value = ratios.get(name)
        met = None if value is None else (value >= threshold if direction == ">=" else value <= threshold)
        out.append({"name": name, "description": description, "value": value,
                    "target": f"{direction} {threshold:g}", "met": met})
    return out


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]], *, left: int = 0) -> list[str]:
    """Numbers right-aligned; the first `left` columns (text) left-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return lines


def _tuning_section(results: dict[str, Any]) -> list[str]:
    """What `model-server tune` measured and chose for each service before the servers started (--tune)."""
    tuning = results.get("tuning") or {}
    if not tuning:
        return []
    lines = ["## Tuning: `model-server tune` before the servers started", ""]
    for backend, run in tuning.items():
        lines += [f"service-{backend} (`{run['command']}`, {run['seconds']:.0f} s):", "", "```text",
                  run["output"].strip(), "```", ""]
    return lines



def machine_line(machine: dict[str, Any], threads: Any = None) -> str:
    """The report header's machine line: CPU, usable CPUs, GPU, torch (and its threads) and transformers."""
    torch = f"{machine['torch']} ({threads} threads)" if threads is not None else machine["torch"]
    return (f"- machine: {machine['cpu_model']}, {machine['cpus_usable']} usable CPUs"
            + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
            + f"; torch {torch}, transformers {machine['transformers']}")


def run_lines(meta: dict[str, Any]) -> list[str]:
    """The report header's last lines, the same in every benchmark: load before and after, git, start, command."""
    git = meta["git"]
    return [f"- load average (1/5/15 min) before: {meta['load_before']}, after: {meta['load_after']}",
            f"- git: {(git.get('commit') or '?')[:12]}"
            + (f" + {len(git['dirty_files'])} uncommitted files" if git.get("dirty_files") else ""),
            f"- started {meta['started_utc']}, took {meta['duration_s']:.0f} s; command: `{meta['command']}`"]

def render_markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    machine = meta["machine"]
    gen = results["generation"]
    model = meta["model"]
    lines = [
        f"# model_server benchmark: {model['label']} on {machine['device']} ({meta['dtype']})",
        "",
        f"- model: `{model['path']}` ({model['note']})",
        f"- decoding: {_decodings_line(results)}; exactly {gen['decode_tokens']} target tokens per segment "
        f"(min_new_tokens = max_new_tokens)",
        machine_line(machine, machine["torch_threads"]),
        f"- engines: {_engines_line(results)}",
        f"- precision: {_precision_line(meta)}",
        *[f"- {line}" for line in _limits_lines(results)],
        *[f"- {line}" for line in _naive_lines(results)],
        *run_lines(meta),
        "",
    ]
    lines += _tuning_section(results)
    lines += _offline_section(results)
    lines += _dtype_section(results)
    lines += _online_section(results)
    lines += _memory_section(results)
    lines += _idle_section(results)
    if results.get("summarization"):
        from benchmarks.summarization import render_markdown as summarization_markdown

        lines += summarization_markdown(results["summarization"])
    ratios = results.get("ratios") or {}
    if ratios:
        lines += [f"## Ratios and targets, {_decoding_label(results, 'headline')}", ""]
        lines += _ratio_table(ratios, results.get("targets") or [])
        lines += ["", f"Max clients = {ratios.get('max_concurrency')} (single sentences), "
                  f"{ratios.get('max_article_concurrency')} (articles). The batching targets (first three) use "
                  f"the {ratios.get('primary_backend')} service.", ""]
    for decoding in (results.get("decodings") or [])[1:]:
        section = results.get(decoding["name"]) or {}
        if section.get("ratios"):
            lines += [f"## Ratios and targets, {_decoding_label(results, decoding['name'])} (single sentences)", ""]
            lines += _ratio_table(section["ratios"], section.get("targets") or []) + [""]
    return "\n".join(lines) + "\n"


def _ratio_table(ratios: dict[str, Any], targets: list[dict[str, Any]]) -> list[str]:
    rows = [[t["description"], t["value"] if t["value"] is not None else "-", t["target"],
             {True: "yes", False: "**NO**", None: "-"}[t["met"]]] for t in targets]
    rows += [[description, ratios.get(key), "-", "-"] for key, description in _INFO_RATIOS]
    lines = ["| ratio | value | target | met |", "|---|---:|---:|---:|"]
    return lines + [f"| {d} | {_fmt(v, 3) if isinstance(v, float) else (v if v is not None else '-')} | {t} | {m} |"
                    for d, v, t, m in rows]


def _decoding_label(results: dict[str, Any], name: str) -> str:
    """'beam 4 (model generation config)' / 'greedy (--greedy-row)': which decoding a table used."""
    for decoding in results.get("decodings") or [{"name": "headline", **results.get("generation", {})}]:
        if decoding["name"] == name:
            beams = decoding.get("num_beams")
            kind = "greedy" if beams == 1 else f"beam {beams}"
            return f"{kind} ({decoding['source']})" if decoding.get("source") else kind
    return name


def _decodings_line(results: dict[str, Any]) -> str:
    sets = results.get("decodings") or []
    if len(sets) <= 1:
        return f"{_decoding_label(results, 'headline')} in every table"
    return (f"headline {_decoding_label(results, 'headline')} (offline, online single sentences and articles, "
            "idle); second set " + ", ".join(
                f"{_decoding_label(results, d['name'])} (offline rows, online single sentences as mode "
                f"'single_{d['name']}', same servers)" for d in sets[1:]))


def _limits_lines(results: dict[str, Any]) -> list[str]:
    """Each service's batch limits, where each came from (settings, a tuning entry, defaults)."""
    lines = []
    for name, value in (results.get("online") or {}).items():
        limits = value.get("limits") if isinstance(value, dict) else None
        if not limits:
            continue
        sources = limits.get("limits_source") or {}
        parts = [f"{key} {limits.get(key)} ({sources.get(key, '?')})"
                 for key in ("max_batch_size", "max_batch_hypotheses", "max_batch_tokens")]
        tuning = limits.get("tuning")
        parts.append("tuning entry " + (_tuning_summary(tuning) if tuning else "none matched"))
        lines.append(f"{name} limits: " + ", ".join(parts))
    return lines


def _tuning_summary(tuning: Any) -> str:
    if isinstance(tuning, dict) and "file" in tuning:
        return f"{tuning['file']} (tuned {tuning.get('measured_at', '?')})"
    return str(tuning)


def _naive_lines(results: dict[str, Any]) -> list[str]:
    """Each naive server's engine and thread layout."""
    lines = []
    for name, value in (results.get("online") or {}).items():
        layout = value.get("layout") if isinstance(value, dict) else None
        if layout:
            lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in layout.items()))
    return lines


def _engines_line(results: dict[str, Any]) -> str:
    """What each backend ran: dtype or compute type, threads, engine version."""
    parts = []
    for backend in results.get("backends") or []:
        info = ((results.get("offline") or {}).get(backend) or {}).get("backend") or {}
        settings = (results.get("settings") or {}).get(backend) or {}
        extra = info.get("extra") or {}
        if backend == "ctranslate2":
            compute = info.get("dtype") or settings.get("ct2_compute_type")
            version = extra.get("ctranslate2_version", "?")
            inter = extra.get("inter_threads", settings.get("ct2_inter_threads"))
            intra = extra.get("intra_threads", settings.get("ct2_intra_threads"))
            parts.append(f"ctranslate2 {version} ({compute}, inter_threads {inter} x intra_threads {intra}, "
                         f"stored {extra.get('quantization', '?')})")
        else:
            attention = f", {extra['attention']} attention ({extra.get('attention_source')})" \
                if extra.get("attention") else ""
            parts.append(f"torch ({info.get('dtype') or settings.get('dtype')}, "
                         f"torch_threads {settings.get('torch_threads')}{attention})")
    return "; ".join(parts) or "-"


def _precision_line(meta: dict[str, Any]) -> str:
    """The CPU flags behind the precision defaults and each engine's choice with its reason."""
    hardware = meta.get("hardware")
    if not hardware:
        return "not recorded"
    present = [name for name, on in hardware["flags"].items() if on]
    parts = [f"cpu flags {' '.join(present) or 'none'} ({hardware['machine']}, from {hardware['flags_source']})"]
    for engine, choice in (meta.get("precision") or {}).items():
        parts.append(f"{engine} {choice['requested']} -> {choice['chosen']}: {choice['reason']}")
    return "; ".join(parts)


# (ratio key, description): reported without a target.
_INFO_RATIOS = (
    ("service_over_best_offline_per_cpu_s", "same, per CPU-second: service / best offline (segments per CPU-s)"),
    ("service_over_naive_per_cpu_s", "same, per CPU-second: service / naive @ max clients"),
    ("idle_http_over_direct_paired", "median of per-round ratios, idle service HTTP / direct"),
    ("service_over_naive_articles", "service / naive @ max clients, articles (tokens/s)"),
    ("best_offline_over_batch1", "best offline batch / batch 1 (tokens/s): ceiling of any batching gain"),
    ("idle_naive_http_over_direct", "idle naive HTTP / direct"),
    ("torch_backend_over_raw", "torch backend / raw model.generate, best batch (tokens/s)"),
    ("ctranslate2_backend_over_raw", "ctranslate2 backend / raw translate_batch, best batch (tokens/s)"),
    ("raw_ct2_over_raw_torch", "raw translate_batch / raw model.generate, best batch (tokens/s)"),
    ("ct2_idle_http_over_direct_paired", "idle ctranslate2 service HTTP / direct (median of per-round ratios)"),
    ("ct2_peak_rss_over_torch", "peak RSS, ctranslate2 service / torch service"),
    ("ct2_engine_ceiling_over_naive_ct2", "best ctranslate2 backend batch / naive ctranslate2 server @ max clients: "
     "the engine's ceiling over it"),
    ("ct2_service_over_naive_ct2", "ctranslate2 service / naive ctranslate2 server @ max clients (tokens/s)"),
    ("ct2_service_over_naive_ct2_latency_1_client", "ctranslate2 service / naive ctranslate2 server, p50 at 1 "
     "client in the online levels (one after the other, not interleaved)"),
)

_ENGINE_LABELS = {("offline", "torch"): "torch backend.generate", ("raw", "torch"): "torch raw model.generate",
                  ("offline", "ctranslate2"): "ctranslate2 backend.generate",
                  ("raw", "ctranslate2"): "ctranslate2 raw translate_batch"}


def _offline_row(label: str, decoding: str, r: dict[str, Any]) -> list[Any]:
    return [label, decoding, r["batch_size"], r["ms_per_batch"], _fmt(r["segments_per_s"], 2), r["target_tokens_per_s"],
            _fmt(r.get("cpu_s_per_batch"), 2), _fmt(r.get("segments_per_cpu_s"), 2)]


def _offline_section(results: dict[str, Any]) -> list[str]:
    rows = []
    sets = [("headline", results)] + [(d["name"], results.get(d["name"]) or {})
                                      for d in (results.get("decodings") or [])[1:]]
    for name, section_set in sets:
        decoding = _decoding_label(results, name)
        for backend in results.get("backends") or []:
            for kind in ("raw", "offline"):
                section = (section_set.get(kind) or {}).get(backend)
                rows += [_offline_row(_ENGINE_LABELS[(kind, backend)], decoding, r)
                         for r in (section or {}).get("rows") or []]
    if not rows:
        return []
    lines = ["## Offline engine: fixed batches, no HTTP, no batcher", ""]
    lines += _table(["engine", "decoding", "batch size", "ms / batch (median)", "segments/s", "target tokens/s",
                     "CPU s / batch", "segments / CPU-s"], rows, left=2)
    return lines + ["", "`backend.generate` is the service's backend (tokenize, generate, scores, decode); raw is the "
                    "engine call alone on pre-tokenized inputs. Batch size 1 is the per-request generate() baseline.",
                    ""]


def _dtype_section(results: dict[str, Any]) -> list[str]:
    """The torch backend per candidate dtype, interleaved per batch size: did dtype=auto pick the faster?"""
    sets = [("headline", results)] + [(d["name"], results.get(d["name"]) or {})
                                      for d in (results.get("decodings") or [])[1:]]
    rows = []
    for name, section_set in sets:
        dtypes = section_set.get("torch_dtypes")
        if not dtypes:
            continue
        for dtype, section in dtypes["sections"].items():
            label = f"torch backend.generate {dtype}" + (" (the run's dtype)" if dtype == dtypes["chosen"] else "")
            rows += [_offline_row(label, _decoding_label(results, name), r) for r in section.get("rows") or []]
    if not rows:
        return []
    lines = ["## Torch dtypes: the backend in each candidate dtype, same batches, interleaved", ""]
    lines += _table(["engine", "decoding", "batch size", "ms / batch (median)", "segments/s", "target tokens/s",
                     "CPU s / batch", "segments / CPU-s"], rows, left=2)
    return lines + [""]


def _online_section(results: dict[str, Any]) -> list[str]:
    online = results.get("online") or {}
    servers = [name for name, value in online.items() if isinstance(value, dict)]
    lines = []
    modes = [("single", f"single sentences, {_decoding_label(results, 'headline')}"),
             ("article", f"whole articles, {_decoding_label(results, 'headline')}")]
    modes += [(f"single_{d['name']}", f"single sentences, {_decoding_label(results, d['name'])}")
              for d in (results.get("decodings") or [])[1:]]
    for mode, title in modes:
        if not any(online[name].get(mode) for name in servers):
            continue
        lines += [f"## Online, {title}: closed-loop clients over HTTP", ""]
        rows = []
        for level in sorted({lv["concurrency"] for name in servers for lv in online[name].get(mode) or []}):
            for name in servers:
                lv = _level(online[name].get(mode), level)
                if lv is None:
                    continue
                batching = lv.get("batching") or {}
                busy = batching.get("model_utilization")
                mean_batch = batching.get("mean_batch_size")
                if mean_batch is not None and batching.get("parallel_batches", 1) > 1:
                    mean_batch = f"{mean_batch:.1f} x{batching['parallel_batches']}"  # that many batches at once
                rows.append([level, name, lv["ok"], lv["errors"], _fmt(lv["requests_per_s"], 2),
                             _fmt(lv["segments_per_s"], 2), lv["target_tokens_per_s"], lv.get("latency_p50_ms"),
                             lv.get("latency_p95_ms"), lv.get("latency_p99_ms"), mean_batch,
                             f"{busy:.0%}" if busy is not None else "-",
                             _fmt(lv.get("segments_per_server_cpu_s"), 2)])
        lines += _table(["clients", "server", "ok", "errors", "requests/s", "segments/s", "target tokens/s",
                         "p50 ms", "p95 ms", "p99 ms", "mean batch", "model busy", "segments / server CPU-s"], rows)
        lines += [""]
    return lines


def _memory_section(results: dict[str, Any]) -> list[str]:
    memory = results.get("memory") or {}
    online = results.get("online") or {}
    rows = [[name, (online.get(name) or {}).get("backend", "-"), values.get("peak_rss_mib"), values.get("rss_mib")]
            for name, values in memory.items()]
    if not rows:
        return []
    lines = ["## Memory: server processes", ""]
    lines += _table(["server", "engine", "peak RSS MiB (VmHWM)", "RSS MiB after the last level"], rows, left=2)
    return lines + ["", "Read from /proc after each server's last load level: the peak covers loading the model "
                    "and every batch it ran (up to max_batch_size sentences).", ""]


def _idle_section(results: dict[str, Any]) -> list[str]:
    idle = results.get("idle") or {}
    paths = [name for name, value in idle.items() if isinstance(value, dict) and "median_ms" in value]
    if not paths:
        return []
    rows = []
    for name in paths:
        entry = idle[name]
        label = f"{name.removeprefix('direct-')} backend.generate([sentence])" if name.startswith("direct-") \
            else f"{name.removesuffix('_http')} over HTTP"
        server = entry.get("server_timing_median_ms") or {}
        detail = ", ".join(f"{k} {v:.1f}" for k, v in server.items()) or "-"
        paired = entry.get("paired_ratio_to_direct")
        rows.append([label, entry["median_ms"], _fmt(paired, 3) if paired else "-", detail])
    lines = ["## Idle single-sentence latency (one client, same sentence, median)", ""]
    lines += _table(["path", "median ms", "median of per-round ratios to its backend's direct call",
                     "server-side timing_ms (median)"], rows, left=1)
    return lines + ["", f"{idle.get('repeats')} rounds, paths interleaved; sentence of "
                    f"{idle.get('sentence_tokens', '?')} source tokens.", ""]


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def render_plots(results: dict[str, Any], stem: Path) -> list[Path]:
    """throughput and latency PNGs next to `stem` (a path without suffix); returns their paths."""
    online = results.get("online") or {}
    servers = [name for name, value in online.items() if isinstance(value, dict)]
    if not servers:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [("single", "single sentences"), ("article", "whole articles")]
    colors = {name: f"C{i}" for i, name in enumerate(servers)}
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (mode, title) in zip(axes, modes):
        for name in servers:
            levels = online[name].get(mode) or []
            if levels:
                ax.plot([lv["concurrency"] for lv in levels], [lv["target_tokens_per_s"] for lv in levels],
                        "s--" if online[name].get("kind") == "naive" else "o-", color=colors[name], label=name)
        for backend, section in (results.get("offline") or {}).items():
            best = _best(section)
            if best:
                ax.axhline(best, color=colors.get(f"service-{backend}", "gray"), linestyle=":", alpha=0.7,
                           label=f"best offline batch, {backend}")
        ax.set(title=f"Throughput, {title}", xlabel="concurrent clients", ylabel="target tokens/s")
        _client_axis(ax, online, servers, mode)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(stem.with_name(stem.name + "-throughput.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (mode, title) in zip(axes, modes):
        for name in servers:
            levels = [lv for lv in online[name].get(mode) or [] if lv.get("latency_p50_ms") is not None]
            style = "--" if online[name].get("kind") == "naive" else "-"
            for pct, marker, alpha in (("p50", "o", 1.0), ("p95", "^", 0.7), ("p99", "v", 0.45)):
                if levels:
                    ax.plot([lv["concurrency"] for lv in levels], [lv[f"latency_{pct}_ms"] for lv in levels],
                            linestyle=style, marker=marker, color=colors[name], alpha=alpha, label=f"{name} {pct}")
        ax.set(title=f"Latency, {title}", xlabel="concurrent clients", ylabel="ms (log scale)")
        _client_axis(ax, online, servers, mode)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(stem.with_name(stem.name + "-latency.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _client_axis(ax, online: dict[str, Any], servers: list[str], mode: str) -> None:
    """Log-2 x axis labelled with the measured client counts."""
    from matplotlib.ticker import NullFormatter

    levels = sorted({lv["concurrency"] for server in servers for lv in online[server].get(mode) or []})
    ax.set_xscale("log", base=2)
    if levels:
        ax.set_xticks(levels, [str(level) for level in levels])
        ax.xaxis.set_minor_formatter(NullFormatter())
