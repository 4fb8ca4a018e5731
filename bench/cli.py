"""The entry point: parse options, install tools, run the chosen sections, write the report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import report, tools
from bench.context import Context, Options
from bench.report import SectionResult
from bench.sections import (
    cold,
    credits,
    entries,
    hits,
    index,
    limiter,
    memory,
    miss,
    redis_hits,
    singleflight,
)
from bench.upstream import write_bodies

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SECTIONS: dict[str, Callable[[Context], SectionResult]] = {
    "hit": hits.run,
    "hit2": hits.run_two_workers,
    "cold": cold.run,
    "miss": miss.run,
    "limiter": limiter.run,
    "singleflight": singleflight.run,
    "memory": memory.run,
    "credits": credits.run,
    "index": index.run,
    "redis-hit": redis_hits.run,
    "entries": entries.run,
}
QUICK = {
    "duration": 3.0,
    "warmup": 1.0,
    "miss_duration": 3.0,
    "limiter_duration": 8.0,
    "memory_requests": 1_000,
    "entries_count": 10_000,
}
PACKAGES = ("uvicorn", "starlette", "httpx", "diskcache", "anyio", "Pillow", "h11")


def parser() -> argparse.ArgumentParser:
    d = Options()
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="short runs, to check the harness")
    p.add_argument("--duration", type=float, help=f"s per measured hit run ({d.duration:g})")
    p.add_argument("--warmup", type=float, help=f"s of warm-up before each ({d.warmup:g})")
    p.add_argument("--connections", type=int, help=f"wrk connections, hits ({d.connections})")
    p.add_argument("--threads", type=int, help=f"wrk threads ({d.threads})")
    p.add_argument("--workers", type=int, help=f"gateway/nginx workers, hits ({d.workers})")
    p.add_argument("--miss-connections", type=int, help=f"({d.miss_connections})")
    p.add_argument("--miss-duration", type=float, help=f"({d.miss_duration:g})")
    p.add_argument(
        "--no-miss-realistic",
        dest="miss_realistic",
        action="store_false",
        default=None,
        help="skip the miss runs with the ~2.6 MB image",
    )
    p.add_argument("--limiter-limit", type=int, help=f"({d.limiter_limit})")
    p.add_argument("--limiter-period", type=float, help=f"({d.limiter_period:g})")
    p.add_argument("--limiter-duration", type=float, help=f"({d.limiter_duration:g})")
    p.add_argument(
        "--upstream-latency", type=float, help=f"s, fake upstream ({d.upstream_latency})"
    )
    p.add_argument(
        "--memory-requests",
        type=int,
        help=f"hits in all, half PNG then half JSON ({d.memory_requests})",
    )
    p.add_argument(
        "--entries-count", type=int, help=f"entries section's index size ({d.entries_count})"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="where RESULTS.md and results.json go "
        "(default: bench/ for a full run, bench/work/ with --quick or --only)",
    )
    return p


def options_from(args: argparse.Namespace) -> Options:
    """Defaults, then --quick's shorter runs, then any option given explicitly."""
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for f in dataclasses.fields(Options):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    return Options(**values)


def chosen_sections(only: str | None) -> list[str]:
    if not only:
        return list(SECTIONS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    return names


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _uvicorn_stack() -> str:
    """Which HTTP parser and event loop uvicorn picks with its 'auto' settings here."""

    def present(module: str) -> bool:
        import importlib.util

        return importlib.util.find_spec(module) is not None

    http = "httptools" if present("httptools") else "h11"
    loop = "uvloop" if present("uvloop") else "asyncio"
    return f"http={http}, loop={loop}"


def environment(paths: dict[str, str], options: Options, argv: Sequence[str]) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    changed = _git("diff", "--name-only", "HEAD", "--", "gateway", "cache").splitlines()
    changed += _git("ls-files", "--others", "--exclude-standard", "gateway", "cache").splitlines()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join(["python -m bench", *argv]),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "load_average_at_start": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "uvicorn_stack": _uvicorn_stack(),
        "nginx": tools.version_of([paths["nginx"], "-v"]),
        "wrk": tools.version_of([paths["wrk"], "-v"]),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_in_gateway_or_cache": [c for c in changed if c != "unknown"],
        "options": dataclasses.asdict(options),
    }


def header(env: dict[str, Any], names: list[str]) -> list[str]:
    pkgs = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    load = ", ".join(f"{x:.2f}" for x in env["load_average_at_start"])
    changed = env["uncommitted_in_gateway_or_cache"]
    modified = f" plus uncommitted changes to {', '.join(changed)}" if changed else ""
    return [
        f"Generated by `{env['command']}` on {env['date']}; sections: {', '.join(names)}.",
        "",
        f"- Machine: {env['cores']} cores ({env['cpu']}), Linux {env['kernel']}, "
        f"load average at start {load}",
        f"- Python {env['python']}; {pkgs}; uvicorn {env['uvicorn_stack']}",
        f"- {env['nginx']}; wrk {env['wrk']}",
        f"- Gateway at commit {env['commit']}{modified}",
        f"- Options: {env['options']}",
        "- Every contender, the fake upstream and the load generator share this machine's "
        "cores; see bench/README.md for what each number means.",
    ]


def run_section(name: str, ctx: Context) -> SectionResult:
    """Run one section; a failure is recorded in the report rather than ending the run."""
    ctx.log(f"section {name}")
    try:
        return SECTIONS[name](ctx)
    except Exception:  # any failure becomes a visible row; the run goes on
        ctx.log(f"section {name} failed")
        return SectionResult(name, "failed", error=traceback.format_exc())


def summary(sections: list[SectionResult]) -> str:
    lines = []
    for section in sections:
        if section.error:
            lines.append(f"{section.name}: FAILED ({section.error.strip().splitlines()[-1]})")
        for m in section.measurements:
            if m.target is not None:
                verdict = {True: "met", False: "NOT MET", None: "n/a"}[m.met]
                lines.append(
                    f"{section.name}: {m.measurement} [{m.contender}] = {m.shown()} "
                    f"(target {m.target}: {verdict})"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    options = options_from(args)
    names = chosen_sections(args.only)
    full = not args.quick and not args.only
    out = args.out or (BENCH_DIR if full else BENCH_DIR / "work")
    install_log: list[str] = []
    paths = tools.ensure_tools(install_log)
    work = BENCH_DIR / "work" / "run"
    shutil.rmtree(work, ignore_errors=True)
    fixed, unique = write_bodies(work / "bodies")
    ctx = Context(options, paths, work, fixed, unique)
    for line in install_log:
        ctx.log(line)
    env = environment(paths, options, argv)
    results = [run_section(name, ctx) for name in names]
    md, js = report.write(out, header(env, names), env, results)
    print(summary(results))
    print(f"wrote {md} and {js}")
    return 1 if any(r.error for r in results) else 0
