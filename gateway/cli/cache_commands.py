"""`stability-gateway cache ls | stats | show | rm | purge`, on the cache folder directly.

They need no server, so they also work on a stopped gateway, or on a folder copied from
another machine. With `--redis-url` (or STABILITY_GATEWAY_REDIS_URL) they work on the store
every replica shares, and `stats` counts every replica's hits and calls. Output is for
people on a terminal and for scripts elsewhere:

    ls      terminal: a table; otherwise one line per entry, tab-separated, full key first
            (key, engine, WxH, bytes, hits, created, prompt); --json: JSON
    stats   terminal: a summary; otherwise (and with --json) JSON, as it always printed
    show    JSON metadata; --image FILE writes the image instead (--index N: which one)
    rm      deletes one entry
    purge   asks on a terminal; elsewhere it needs --yes

`show` and `rm` take a full key or any unique prefix of 8 or more hex digits. Exit codes:
0 done, 1 no such entry (or the prefix matches several, or purge was declined), 2 usage:
a malformed key, no cache folder, a bad configuration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.cli import store_access as sa
from gateway.config import load_settings

MIB = 1024 * 1024


class UsageError(Exception):
    """A request the command cannot carry out as given: exit 2 with its one-line message."""


def add_parser(sub: Any) -> None:
    # Accepted both before and after the action (`cache --cache-dir X ls`, `cache ls
    # --cache-dir X`): SUPPRESS keeps an absent option from overwriting a given one.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file")
    common.add_argument(
        "--cache-dir",
        default=argparse.SUPPRESS,
        help="cache folder (default: $STABILITY_GATEWAY_CACHE_DIR, else config)",
    )
    common.add_argument(
        "--redis-url",
        default=argparse.SUPPRESS,
        help="the replicas' shared Redis (default: $STABILITY_GATEWAY_REDIS_URL, else config); "
        "key prefix from $STABILITY_GATEWAY_REDIS_PREFIX",
    )
    c = sub.add_parser(
        "cache",
        parents=[common],
        help="inspect or clear the cache folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = c.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("ls", parents=[common], help="list entries, newest first")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--offset", type=int, default=0)
    ls.add_argument("--json", action="store_true", help="JSON, as GET /cache/entries")
    st = actions.add_parser("stats", parents=[common], help="entries, bytes, hits, misses...")
    st.add_argument("--json", action="store_true", help="the raw numbers as JSON")
    show = actions.add_parser("show", parents=[common], help="one entry's metadata, or image")
    show.add_argument("key", help="a key, or a unique prefix of 8+ hex digits")
    show.add_argument("--image", metavar="FILE", help="write the image to FILE ('-': stdout)")
    show.add_argument("--index", type=int, help="which image of a multi-sample entry (0...)")
    rm = actions.add_parser("rm", parents=[common], help="delete one entry")
    rm.add_argument("key", help="a key, or a unique prefix of 8+ hex digits")
    purge = actions.add_parser("purge", parents=[common], help="delete every entry")
    purge.add_argument("--yes", action="store_true", help="do not ask (needed in scripts)")
    c.set_defaults(func=cache_command)


def cache_command(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    directory = getattr(args, "cache_dir", None) or settings.cache.dir
    settings = settings.replace(cache={"dir": directory})
    redis_url = getattr(args, "redis_url", None)
    if redis_url:
        settings = settings.replace(redis={"url": redis_url})
    try:
        store = sa.open_store(settings)
    except sa.NoRedis as exc:
        _error(str(exc))
        return 2
    except sa.NoCache as exc:
        _error(f"{exc}: set STABILITY_GATEWAY_CACHE_DIR or --cache-dir to the gateway's cache")
        return 2
    where = sa.where(settings) if settings.redis.url else str(Path(directory).resolve())
    try:
        return ACTIONS[args.action](store, args, where)
    except (sa.BadKey, UsageError) as exc:
        _error(str(exc))
        return 2
    except sa.NoEntry as exc:
        _error(str(exc))
        return 1
    finally:
        store.close()


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


# -- ls --------------------------------------------------------------------------------------


def ls(store: sa.Store, args: argparse.Namespace, directory: str) -> int:
    if args.limit < 0 or args.offset < 0:
        raise UsageError("--limit and --offset must be >= 0")
    total, page = sa.list_page(store, args.limit, args.offset)
    if args.json:
        entries = [sa.public(m) for m in page]
        listing = {"dir": directory, "total": total, "limit": args.limit,
                   "offset": args.offset, "entries": entries}  # fmt: skip
        print(json.dumps(listing, indent=2, ensure_ascii=False))
    elif sys.stdout.isatty():
        _print_table(total, page, args.offset, directory)
    else:
        for meta in page:
            print("\t".join(_one_line(field) for field in _row(meta, iso=True)))
    return 0


def _row(meta: sa.Meta, *, iso: bool) -> list[str]:
    """key, engine, WxH, bytes, hits, created, prompt."""
    prompts = meta.get("prompts") or [{"text": meta.get("prompt", "")}]
    positive = [p for p in prompts if float(p.get("weight", 1) or 0) > 0] or prompts
    return [
        str(meta["key"]),
        str(meta.get("engine", "")),
        f"{meta.get('width', '?')}x{meta.get('height', '?')}",
        str(meta.get("bytes", 0)),
        str(meta.get("hits", 0)),
        _when(meta.get("created_at"), iso=iso),
        str(positive[0].get("text", "")),
    ]


def _one_line(text: str) -> str:
    """A field that cannot break the one-line, tab-separated format."""
    return " ".join(text.replace("\t", " ").splitlines())


def _when(ts: float | None, *, iso: bool = False) -> str:
    if not ts:
        return "-"
    when = dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ" if iso else "%Y-%m-%d %H:%M")


def _print_table(total: int, page: list[sa.Meta], offset: int, directory: str) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = [_row(meta, iso=False) for meta in page]
    # The fixed columns keep their width; engine and prompt share what is left, so that
    # the table fits the terminal (80 columns included) instead of losing columns.
    fixed = {"key": 16, "size": 9, "bytes": 10, "hits": 4, "created (UTC)": 16}
    left = max(console.width - sum(fixed.values()) - 7, 16)
    engine_width = min(max((len(r[1]) for r in rows), default=6), max(8, left // 2))
    table = Table(
        title=f"{total} entries in {directory}",
        box=box.SIMPLE_HEAD,
        padding=(0, 0),  # SIMPLE_HEAD already puts a space between columns
        caption=(f"entries {offset + 1}-{offset + len(page)} of {total}; " if page else "")
        + "keys cut to 16 digits (show, rm take 8+); `ls | cat` prints them whole",
    )
    table.add_column("key", no_wrap=True, width=16)
    table.add_column("engine", no_wrap=True, overflow="ellipsis", width=engine_width)
    table.add_column("size", no_wrap=True, width=9)
    table.add_column("bytes", justify="right", no_wrap=True, width=10)
    table.add_column("hits", justify="right", no_wrap=True, width=4)
    table.add_column("created (UTC)", no_wrap=True, width=16)
    longest_prompt = max((len(_one_line(r[6])) for r in rows), default=6)
    prompt_width = max(6, min(left - engine_width, longest_prompt))
    table.add_column("prompt", no_wrap=True, overflow="ellipsis", width=prompt_width)
    for key, engine, size, nbytes, hits, created, prompt in rows:
        table.add_row(key[:16], engine, size, _kib(nbytes), hits, created, _one_line(prompt))
    console.print(table)


# -- stats -----------------------------------------------------------------------------------


def stats(store: sa.Store, args: argparse.Namespace, directory: str) -> int:
    numbers = {"dir": directory, **sa.stats(store)}
    if args.json or not sys.stdout.isatty():
        print(json.dumps(numbers, indent=2))
    else:
        print(summary(numbers))
    return 0


def _kib(n: Any) -> str:
    return f"{int(n or 0) / 1024:,.1f} KiB"


def _mib(n: Any) -> str:
    return f"{int(n or 0) / MIB:.1f} MiB"


def summary(numbers: dict[str, Any]) -> str:
    """The stats as a person reads them; numbers it does not know are listed at the end."""
    n = dict(numbers)
    hits, misses = int(n.pop("hits", 0)), int(n.pop("misses", 0))
    coalesced = int(n.pop("coalesced", 0))
    ratio = float(n.pop("hit_ratio", 0.0))
    lines = [
        ("cache", str(n.pop("dir", ""))),
        (
            "entries",
            f"{n.pop('entries', 0)} ({_mib(n.pop('bytes', 0))} of images, "
            f"{_mib(n.pop('disk_bytes', 0))} on disk)",
        ),
        (
            "requests",
            f"{hits} hits, {coalesced} joined an identical call, {misses} misses: "
            f"hit ratio {ratio * 100:.1f} % (answered without an upstream call of their own)",
        ),
        ("upstream calls", str(n.pop("upstream_calls", 0))),
        ("served from cache", _mib(n.pop("bytes_served_from_cache", 0))),
        ("fallbacks served", str(n.pop("stale_served", 0))),
    ]
    spent, saved = float(n.pop("credits_spent", 0)), float(n.pop("credits_saved", 0))
    today_spent = float(n.pop("credits_spent_today", 0))
    today_saved = float(n.pop("credits_saved_today", 0))
    lines.append(("credits spent", f"{spent:g} ({today_spent:g} today, UTC)"))
    lines.append(("credits saved", f"{saved:g} ({today_saved:g} today, UTC)"))
    for caller, figures in sorted(dict(n.pop("callers", {}) or {}).items()):
        lines.append((
            f"  {caller}",
            f"spent {float(figures.get('spent', 0)):g}, saved {float(figures.get('saved', 0)):g}",
        ))  # fmt: skip
    lines += [(name.replace("_", " "), str(value)) for name, value in n.items()]
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in lines)


# -- show, rm, purge -------------------------------------------------------------------------


def show(store: sa.Store, args: argparse.Namespace, directory: str) -> int:
    key = sa.resolve(store, args.key)
    if args.image is None:
        if args.index is not None:
            raise UsageError("--index chooses which image --image writes: give --image FILE")
        meta = sa.get_meta(store, key)
        if meta is None:
            raise sa.NoEntry(f"no entry with key {key}")
        print(json.dumps(sa.public(meta), indent=2, ensure_ascii=False))
        return 0
    images = sa.get_images(store, key)
    if images is None:  # deleted meanwhile, or its bytes were damaged (then it is removed)
        raise sa.NoEntry(f"entry {key} has no readable image")
    index = args.index or 0
    if not 0 <= index < len(images):
        raise UsageError(
            f"entry {key[:16]} has {len(images)} image(s): --index must be 0 to {len(images) - 1}"
        )
    data, media_type = images[index]
    if args.image == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write image bytes to a terminal: redirect stdout")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    Path(args.image).write_bytes(data)
    print(f"wrote {args.image}: {media_type}, {len(data)} bytes (image {index} of {len(images)})")
    return 0


def rm(store: sa.Store, args: argparse.Namespace, directory: str) -> int:
    key = sa.resolve(store, args.key)
    if not sa.delete(store, key):
        raise sa.NoEntry(f"no entry with key {key}")
    print(f"deleted {key}")
    return 0


def purge(store: sa.Store, args: argparse.Namespace, directory: str) -> int:
    if not args.yes:
        count = int(sa.stats(store)["entries"])
        if not sys.stdin.isatty():
            raise UsageError(
                f"purge deletes all {count} entries in {directory}: stdin is not a terminal, "
                "so pass --yes"
            )
        try:
            answer = input(f"Delete all {count} entries in {directory}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    print(f"purged {sa.purge(store)} entries")
    return 0


ACTIONS: dict[str, Callable[[sa.Store, argparse.Namespace, str], int]] = {
    "ls": ls,
    "stats": stats,
    "show": show,
    "rm": rm,
    "purge": purge,
}
