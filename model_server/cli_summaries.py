"""`model-server summarize` and `model-server article`: the summary endpoints on the command line.

Registered by `model_server.cli.build_parser`; like `translate`, every setting is also a flag.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Sequence

from pydantic import ValidationError

from model_server.cli_common import CommandFailed, add_settings_flags, load_services, read_input, settings_from


def register(sub: Any, *, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add the `summarize` and `article` sub-commands to the `model-server` parser."""
    summarize = sub.add_parser("summarize", help="summarize a file (or stdin) with mT5, same language, to stdout",
                               parents=list(parents))
    summarize.add_argument("input", nargs="?", help="UTF-8 text file; '-' or omitted = stdin")
    summarize.add_argument("--lang", choices=("ar", "en"), default="ar", help="language of the text (default: ar)")
    summarize.add_argument("--preset", default=None,
                           help="summary preset (default: the default_summary_preset setting)")
    summarize.add_argument("--json", action="store_true", help="print the preset, chunking and timings as JSON")
    add_settings_flags(summarize)
    summarize.set_defaults(func=cmd_summarize)

    article = sub.add_parser("article", help="translate and summarize an article file; JSON on stdout",
                             parents=list(parents))
    article.add_argument("input", help="plain text (first line = title, the rest = body) or JSON "
                                       "{\"title\", \"body\", \"id\", \"metadata\"}; '-' = stdin")
    article.add_argument("--strategy", choices=("translate-summary", "summarize-both"), default=None,
                         help="how the English summary is made (default: the summary_strategy setting)")
    article.add_argument("--preset", default=None, help="summary preset (default: the default_summary_preset setting)")
    add_settings_flags(article)
    article.set_defaults(func=cmd_article)


def parse_article(text: str) -> dict[str, Any]:
    """A JSON object (the /v1/articles body) or plain text: first non-empty line = title, the rest = body."""
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandFailed(f"article: the input is not valid JSON ({exc}); give a JSON object "
                                '{"title": ..., "body": ...} or plain text (first line = title)') from None
    else:
        title, _, body = text.strip().partition("\n")
        data = {"title": title.strip(), "body": body.strip()}
    from model_server.api.summary_schemas import ArticleRequest

    try:
        return ArticleRequest.model_validate(data).model_dump(exclude_unset=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'article'}: {e['msg']}" for e in exc.errors())
        raise CommandFailed(f"article: {problems}; give a JSON object with a non-empty title and body") from None


def _run(args: argparse.Namespace, work) -> Any:
    """Load the services (summarization on), run `work(summarizer)`, close."""
    services = load_services(settings_from(args), summarization=True)

    async def run():
        services.start()
        try:
            return await work(services.summarizer)
        finally:
            await services.close()

    return asyncio.run(run())


def _dump(model: Any) -> None:
    json.dump(model.model_dump(mode="json"), sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def cmd_summarize(args: argparse.Namespace) -> int:
    from model_server.api.schemas import TEST_MODEL_WARNING
    from model_server.api.summary_schemas import SummarizeResponse

    text = read_input(args.input)
    result = _run(args, lambda summarizer: summarizer.summarize(text, lang=args.lang, preset=args.preset))
    if args.json:
        _dump(SummarizeResponse(**dict(result), warning=TEST_MODEL_WARNING if result.model.test_model else None))
    else:
        sys.stdout.write(result.summary.text + "\n")
    return 0


def cmd_article(args: argparse.Namespace) -> int:
    from model_server.api.schemas import TEST_MODEL_WARNING
    from model_server.api.summary_schemas import ArticleResponse

    article = parse_article(read_input(args.input))
    strategy = args.strategy or article.get("strategy")
    preset = args.preset or article.get("preset")
    result = _run(args, lambda summarizer: summarizer.article(
        article["title"], article["body"], strategy=strategy, preset=preset, article_id=article.get("id"),
        metadata=article.get("metadata")))
    test_model = any(info.test_model for info in result.models.values())
    _dump(ArticleResponse(**dict(result), warning=TEST_MODEL_WARNING if test_model else None))
    return 0
