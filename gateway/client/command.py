"""`stability-gateway generate SCRIPT.json --project ID`: a video script's images, once.

Reads the seeds' script (`{"segments": [{"image_description": "..."}, ...]}`), generates
one image per described segment through the gateway, saves
`{root}/{project}/assets/image_NNN.png` and records each in the asset database. A rerun
sends identical requests, so the gateway answers every image from its cache: no credit.

Exit codes: 0 when the success rate is at least --min-success, 1 when it is not (the
failures are listed), 2 for usage errors (unreadable script, unknown style, gateway
unreachable), reported in one line without a traceback.

Only argparse is imported at module level: the gateway's CLI builds this parser on every
start, `serve` included, and must not load SQLAlchemy or Pillow for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.client.results import ImageResult
    from gateway.client.service import ScriptRun
    from gateway.client.styles import StyleProfile
    from gateway.client.translate import GlossaryTranslator

DEFAULT_GATEWAY = "http://127.0.0.1:8080"


class UsageError(Exception):
    """Exit 2: something the user must fix before any image can be made."""


def _size(text: str) -> tuple[int, int]:
    from gateway.client.sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 32:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 32, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def add_generate_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `generate` on the CLI's subparsers; it runs `run_generate`."""
    g = subparsers.add_parser(
        "generate",
        help="generate a video script's images through the gateway",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    g.add_argument("script", metavar="SCRIPT.json", help='the script: {"segments": [...]}')
    g.add_argument("--project", required=True, metavar="ID", help="project id (a folder name)")
    g.add_argument(
        "--gateway", default=DEFAULT_GATEWAY, metavar="URL",
        help=f"gateway (or Stability) base URL (default {DEFAULT_GATEWAY})",
    )  # fmt: skip
    g.add_argument(
        "--api-key", metavar="KEY",
        help="Stability key (default $STABILITY_API_KEY; a gateway with its own key needs none)",
    )  # fmt: skip
    g.add_argument(
        "--style", default="cinematic", metavar="NAME|FILE",
        help="style profile: a built-in or [styles.NAME] name, or a TOML file (default cinematic)",
    )  # fmt: skip
    g.add_argument("--config", metavar="FILE", help="config file holding [styles.NAME] tables")
    g.add_argument("--root", default="projects", metavar="DIR", help="output folder (projects)")
    g.add_argument(
        "--assets", metavar="URL",
        help="asset database: SQLAlchemy URL or SQLite file (default ROOT/assets.db)",
    )  # fmt: skip
    g.add_argument(
        "--concurrency", type=_concurrency, default=4, metavar="N",
        help="images generated at once (default 4)",
    )  # fmt: skip
    g.add_argument(
        "--size", type=_size, default=(1920, 1080), metavar="WxH",
        help="output size (default 1920x1080)",
    )  # fmt: skip
    g.add_argument(
        "--min-success", type=_fraction, default=0.8, metavar="RATE",
        help="exit 1 when fewer images succeed (default 0.8)",
    )  # fmt: skip
    g.add_argument(
        "--allow-cached", action="store_true",
        help="when Stability fails, accept the gateway's cached image (X-Cache: STALE)",
    )  # fmt: skip
    g.add_argument(
        "--glossary", metavar="FILE", help="TOML or JSON phrase table for Chinese descriptions"
    )
    g.set_defaults(func=run_generate)
    return g


def read_script(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read script {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"script {path} is not UTF-8 text") from None
    try:
        script = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"script {path} is not valid JSON: {exc}") from None
    from gateway.client.service import script_descriptions

    try:
        script_descriptions(script)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return dict(script)


def run_generate(args: argparse.Namespace) -> int:
    """The command's body: 0, 1 or 2 (see the module docstring)."""
    try:
        script = read_script(args.script)
        style, translator = _prepare(args)
        return asyncio.run(_generate(args, script, style, translator))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _prepare(args: argparse.Namespace) -> tuple[StyleProfile, GlossaryTranslator | None]:
    from gateway.client.errors import StyleError, TranslationError
    from gateway.client.service import check_project_id
    from gateway.client.styles import StyleProfile
    from gateway.client.translate import GlossaryTranslator

    try:
        check_project_id(args.project)
        style = StyleProfile.load(args.style, config=args.config)
        translator = GlossaryTranslator(args.glossary) if args.glossary else None
    except (StyleError, TranslationError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return style, translator


async def _generate(
    args: argparse.Namespace,
    script: dict[str, Any],
    style: StyleProfile,
    translator: GlossaryTranslator | None,
) -> int:
    import logging

    from rich.console import Console
    from rich.logging import RichHandler

    from gateway.client.errors import NetworkError
    from gateway.client.service import ImageGenerationService
    from gateway.client.stability import StabilityAIClient

    err = Console(stderr=True)
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    logger = logging.getLogger("gateway.client")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)  # fallbacks (STALE) and content-policy refusals
    logging.getLogger("gateway.client.failures").setLevel(logging.CRITICAL)  # listed at the end
    client = StabilityAIClient(args.api_key, base_url=args.gateway)
    service = ImageGenerationService(
        client,
        style=style,
        output_size=args.size,
        max_concurrent=args.concurrency,
        min_success_rate=args.min_success,
        translator=translator,
        assets=args.assets,
        root=args.root,
        allow_cached=args.allow_cached,
    )
    try:
        try:
            await client.ping()
        except NetworkError:
            raise UsageError(f"gateway unreachable at {args.gateway}") from None
        run = await _with_progress(service, args.project, script, err)
        return report(run, args.min_success)
    finally:
        await service.close()
        logger.removeHandler(handler)


async def _with_progress(
    service: Any, project_id: str, script: dict[str, Any], err: Any
) -> ScriptRun:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from gateway.client.service import script_descriptions

    total = len(script_descriptions(script))
    counts = {"hits": 0, "generated": 0, "failed": 0}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "from cache {task.fields[hits]} · generated {task.fields[generated]} · "
            "failed {task.fields[failed]}"
        ),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("images", total=total, hits=0, generated=0, failed=0)

        def advance(result: ImageResult) -> None:
            if not result.ok:
                counts["failed"] += 1
            elif result.image is not None and result.image.from_cache:
                counts["hits"] += 1
            else:
                counts["generated"] += 1
            progress.update(
                task,
                advance=1,
                hits=counts["hits"],
                generated=counts["generated"],
                failed=counts["failed"],
            )

        run: ScriptRun = await service.run_script(project_id, script, on_result=advance)
    return run


def _number(value: float) -> str:
    return f"{value:g}"


def summary_line(run: ScriptRun) -> str:
    """`10 images: 10 from cache, 0 generated, 0 failed; credits: 0 spent, 4 saved`."""
    results = run.results
    hits = sum(1 for r in results if r.ok and r.image is not None and r.image.from_cache)
    failed = sum(1 for r in results if not r.ok)
    generated = len(results) - hits - failed
    charged = [
        r.image.credits for r in results if r.image is not None and r.image.credits is not None
    ]
    costs = [
        asset.meta.get("cost")
        for asset, result in zip(run.assets, results, strict=True)
        if result.ok and result.image is not None and result.image.from_cache
    ]
    known = [cost for cost in costs if isinstance(cost, int | float)]
    if charged or known:
        spent = _number(sum(charged)) if charged else "?"
        # Nothing from the cache saved nothing; hits whose first cost is unknown say "?".
        saved = _number(sum(known)) if known else ("?" if costs else "0")
        credits = f"credits: {spent} spent, {saved} saved"
    else:
        credits = "credits: not reported by the gateway"
    return (
        f"{len(results)} images: {hits} from cache, {generated} generated, {failed} failed; "
        f"{credits}"
    )


def report(run: ScriptRun, min_success: float) -> int:
    """Print the table and the summary line (stdout) and any failures (stderr)."""
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False)
    folder = run.assets[0].file_path if run.assets and run.assets[0].file_path else None
    caption = f"in {Path(folder).parent}" if folder else None
    table = Table(title=f"project {run.project_id}", caption=caption)
    for column in ("#", "description", "status", "X-Cache", "file"):
        table.add_column(column, overflow="fold")
    for result, asset in zip(run.results, run.assets, strict=True):
        description = result.description
        if len(description) > 48:
            description = description[:45] + "..."
        if asset.file_path:
            file = Path(asset.file_path).name
        else:
            error = result.error
            file = f"{error.status or ''} {error.name or type(error).__name__}" if error else "-"
        table.add_row(str(result.index), description, asset.status, result.cache or "-", file)
    out.print(table)
    print(summary_line(run), flush=True)
    if run.success_rate >= min_success:
        return 0
    done = sum(result.ok for result in run.results)
    print(
        f"error: {done} of {len(run.results)} images succeeded ({run.success_rate:.0%}), "
        f"under the {min_success:.0%} threshold; failed:",
        file=sys.stderr,
    )
    for result in run.results:
        if not result.ok:
            print(f"  #{result.index} {result.description}: {result.error}", file=sys.stderr)
    return 1
