"""Results -> ratios and targets, a markdown table, and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# (name, description, threshold, direction): direction ">=" means the value must be at least threshold.
TARGETS = (
    ("service_over_best_offline", "service @ max clients, single sentences / best offline batch (tokens/s)", 0.9, ">="),
    ("service_over_naive", "service / naive @ max clients, single sentences (tokens/s)", 10.0, ">="),
    ("idle_http_over_direct", "idle single-sentence HTTP latency / direct backend.generate (median)", 1.10, "<="),
)


def _level(levels: list[dict[str, Any]] | None, concurrency: int) -> dict[str, Any] | None:
    return next((lv for lv in levels or [] if lv["concurrency"] == concurrency), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    online = results.get("online") or {}
    service = online.get("service") or {}
    naive = online.get("naive") or {}
    offline = results.get("offline") or {}
    idle = results.get("idle") or {}
    ratios: dict[str, Any] = {}

    def tok(level: dict[str, Any] | None) -> float | None:
        return level["target_tokens_per_s"] if level and level.get("ok") else None

    single_levels = [lv["concurrency"] for lv in service.get("single") or []]
    if single_levels:
        top = max(single_levels)
        ratios["max_concurrency"] = top
        ratios["service_over_best_offline"] = _ratio(tok(_level(service.get("single"), top)),
                                                     (offline.get("best") or {}).get("target_tokens_per_s"))
        ratios["service_over_naive"] = _ratio(tok(_level(service.get("single"), top)),
                                              tok(_level(naive.get("single"), top)))
    article_levels = [lv["concurrency"] for lv in service.get("article") or []]
    if article_levels:
        top = max(article_levels)
        ratios["max_article_concurrency"] = top
        ratios["service_over_naive_articles"] = _ratio(tok(_level(service.get("article"), top)),
                                                       tok(_level(naive.get("article"), top)))
    # The same two throughput ratios per CPU-second (CPU runs only): robust to other jobs on the machine.
    if single_levels:
        top = max(single_levels)

        def per_cpu(level: dict[str, Any] | None) -> float | None:
            return level.get("segments_per_server_cpu_s") if level and level.get("ok") else None

        ratios["service_over_best_offline_per_cpu_s"] = _ratio(
            per_cpu(_level(service.get("single"), top)), (offline.get("best_per_cpu_s") or {}).get("segments_per_cpu_s"))
        ratios["service_over_naive_per_cpu_s"] = _ratio(per_cpu(_level(service.get("single"), top)),
                                                        per_cpu(_level(naive.get("single"), top)))
    rows = offline.get("rows") or []
    one = next((r for r in rows if r["batch_size"] == 1), None)
    if one and offline.get("best"):
        # The ceiling for any batching server over per-request generate() on this machine.
        ratios["best_offline_over_batch1"] = _ratio(offline["best"]["target_tokens_per_s"], one["target_tokens_per_s"])
    direct = (idle.get("direct") or {}).get("median_ms")
    ratios["idle_http_over_direct"] = _ratio((idle.get("service_http") or {}).get("median_ms"), direct)
    ratios["idle_naive_http_over_direct"] = _ratio((idle.get("naive_http") or {}).get("median_ms"), direct)
    ratios["idle_http_over_direct_paired"] = (idle.get("service_http") or {}).get("paired_ratio_to_direct")
    return ratios


def evaluate_targets(ratios: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, description, threshold, direction in TARGETS:
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


def render_markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    machine = meta["machine"]
    gen = results["generation"]
    model = meta["model"]
    lines = [
        f"# model_server benchmark: {model['label']} on {machine['device']} ({meta['dtype']})",
        "",
        f"- model: `{model['path']}` ({model['note']})",
        f"- decoding: num_beams={gen['num_beams']}, exactly {gen['decode_tokens']} target tokens per segment "
        f"(min_new_tokens = max_new_tokens)",
        f"- machine: {machine['cpu_model']}, {machine['cpus_usable']} usable CPUs"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
        + f"; torch {machine['torch']} ({machine['torch_threads']} threads), transformers {machine['transformers']}",
        f"- load average (1/5/15 min) before: {meta['load_before']}, after: {meta['load_after']}",
        f"- git: {(meta['git'].get('commit') or '?')[:12]}"
        + (f" + {len(meta['git']['dirty_files'])} uncommitted files" if meta["git"].get("dirty_files") else ""),
        f"- started {meta['started_utc']}, took {meta['duration_s']:.0f} s; command: `{meta['command']}`",
        "",
    ]
    offline = results.get("offline")
    if offline:
        lines += ["## Offline engine: backend.generate on fixed batches (no HTTP, no batcher)", ""]
        lines += _table(["batch size", "ms / batch (median)", "segments/s", "target tokens/s", "CPU s / batch",
                         "segments / CPU-s"],
                        [[r["batch_size"], r["ms_per_batch"], _fmt(r["segments_per_s"], 2), r["target_tokens_per_s"],
                          _fmt(r.get("cpu_s_per_batch"), 2), _fmt(r.get("segments_per_cpu_s"), 2)]
                         for r in offline["rows"]])
        lines += ["", "Batch size 1 is the per-request generate() engine baseline.", ""]
    online = results.get("online") or {}
    for mode, title in (("single", "single sentences"), ("article", "whole articles")):
        service = (online.get("service") or {}).get(mode) or []
        naive = (online.get("naive") or {}).get(mode) or []
        if not service and not naive:
            continue
        lines += [f"## Online, {title}: closed-loop clients over HTTP", ""]
        rows = []
        for level in sorted({lv["concurrency"] for lv in service + naive}):
            for name, levels in (("service", service), ("naive", naive)):
                lv = _level(levels, level)
                if lv is None:
                    continue
                batching = lv.get("batching") or {}
                busy = batching.get("model_utilization")
                rows.append([level, name, lv["ok"], lv["errors"], _fmt(lv["requests_per_s"], 2),
                             _fmt(lv["segments_per_s"], 2), lv["target_tokens_per_s"], lv.get("latency_p50_ms"),
                             lv.get("latency_p95_ms"), lv.get("latency_p99_ms"), batching.get("mean_batch_size"),
                             f"{busy:.0%}" if busy is not None else "-",
                             _fmt(lv.get("segments_per_server_cpu_s"), 2)])
        lines += _table(["clients", "server", "ok", "errors", "requests/s", "segments/s", "target tokens/s",
                         "p50 ms", "p95 ms", "p99 ms", "mean batch", "model busy", "segments / server CPU-s"], rows)
        lines += [""]
    idle = results.get("idle") or {}
    if idle:
        lines += ["## Idle single-sentence latency (one client, same sentence, median)", ""]
        rows = []
        if idle.get("direct"):
            rows.append(["direct backend.generate([sentence])", idle["direct"]["median_ms"], "-", "-"])
        for key, name in (("service_http", "service over HTTP"), ("naive_http", "naive server over HTTP")):
            if idle.get(key):
                server = idle[key].get("server_timing_median_ms") or {}
                detail = ", ".join(f"{k} {v:.1f}" for k, v in server.items()) or "-"
                paired = idle[key].get("paired_ratio_to_direct")
                rows.append([name, idle[key]["median_ms"], _fmt(paired, 3) if paired else "-", detail])
        lines += _table(["path", "median ms", "median of per-round ratios to direct",
                         "server-side timing_ms (median)"], rows, left=1)
        lines += ["", f"{idle.get('repeats')} rounds, paths interleaved; sentence of "
                  f"{idle.get('sentence_tokens', '?')} source tokens.", ""]
    ratios = results.get("ratios") or {}
    if ratios:
        lines += ["## Ratios and targets", ""]
        rows = [[t["description"], t["value"] if t["value"] is not None else "-", t["target"],
                 {True: "yes", False: "**NO**", None: "-"}[t["met"]]] for t in results.get("targets") or []]
        rows += [["same, per CPU-second: service / best offline (segments per CPU-s)",
                  ratios.get("service_over_best_offline_per_cpu_s"), "-", "-"],
                 ["same, per CPU-second: service / naive @ max clients", ratios.get("service_over_naive_per_cpu_s"),
                  "-", "-"],
                 ["median of per-round ratios, idle service HTTP / direct", ratios.get("idle_http_over_direct_paired"),
                  "-", "-"],
                 ["service / naive @ max clients, articles (tokens/s)", ratios.get("service_over_naive_articles"),
                  "-", "-"],
                 ["best offline batch / batch 1 (tokens/s): ceiling of any batching gain",
                  ratios.get("best_offline_over_batch1"), "-", "-"],
                 ["idle naive HTTP / direct", ratios.get("idle_naive_http_over_direct"), "-", "-"]]
        lines += ["| ratio | value | target | met |", "|---|---:|---:|---:|"]
        lines += [f"| {d} | {_fmt(v, 3) if isinstance(v, float) else (v if v is not None else '-')} | {t} | {m} |"
                  for d, v, t, m in rows]
        lines += [f"", f"Max clients = {ratios.get('max_concurrency')} (single sentences), "
                  f"{ratios.get('max_article_concurrency')} (articles).", ""]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def render_plots(results: dict[str, Any], stem: Path) -> list[Path]:
    """throughput and latency PNGs next to `stem` (a path without suffix); returns their paths."""
    online = results.get("online") or {}
    if not online:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [("single", "single sentences"), ("article", "whole articles")]
    best = ((results.get("offline") or {}).get("best") or {}).get("target_tokens_per_s")
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (mode, title) in zip(axes, modes):
        for server, style, color in (("service", "o-", "C0"), ("naive", "s--", "C1")):
            levels = (online.get(server) or {}).get(mode) or []
            if levels:
                ax.plot([lv["concurrency"] for lv in levels], [lv["target_tokens_per_s"] for lv in levels],
                        style, color=color, label=server)
        if best:
            ax.axhline(best, color="gray", linestyle=":", label="best offline batch")
        ax.set(title=f"Throughput, {title}", xlabel="concurrent clients", ylabel="target tokens/s")
        _client_axis(ax, online, mode)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    paths.append(stem.with_name(stem.name + "-throughput.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (mode, title) in zip(axes, modes):
        for server, style, colors in (("service", "-", ("C0", "tab:cyan", "navy")),
                                      ("naive", "--", ("C1", "gold", "darkred"))):
            levels = (online.get(server) or {}).get(mode) or []
            levels = [lv for lv in levels if lv.get("latency_p50_ms") is not None]
            for (pct, marker), color in zip((("p50", "o"), ("p95", "^"), ("p99", "v")), colors):
                if levels:
                    ax.plot([lv["concurrency"] for lv in levels], [lv[f"latency_{pct}_ms"] for lv in levels],
                            linestyle=style, marker=marker, color=color, label=f"{server} {pct}")
        ax.set(title=f"Latency, {title}", xlabel="concurrent clients", ylabel="ms (log scale)")
        _client_axis(ax, online, mode)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(stem.with_name(stem.name + "-latency.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _client_axis(ax, online: dict[str, Any], mode: str) -> None:
    """Log-2 x axis labelled with the measured client counts."""
    from matplotlib.ticker import NullFormatter

    levels = sorted({lv["concurrency"] for server in ("service", "naive")
                     for lv in (online.get(server) or {}).get(mode) or []})
    ax.set_xscale("log", base=2)
    if levels:
        ax.set_xticks(levels, [str(level) for level in levels])
        ax.xaxis.set_minor_formatter(NullFormatter())
