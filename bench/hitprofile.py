"""Where the gateway's time goes on cache hits: py-spy samples the gateway under wrk load.

    python -m bench.hitprofile [--seconds 10] [--accept image/png|application/json] [--gil]
                               [--cold N]

Not part of `python -m bench` (py-spy is not a project dependency: `pip install py-spy`
into the same environment). Starts the fake upstream and a gateway, fills the cache with
the benchmark image, runs wrk against it while py-spy records, and prints the functions
with the most samples, by own time and by time including callees, plus the flame-graph
input (collapsed stacks) in bench/work/profile-<accept>.txt.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench import tools, wrk
from bench.context import Context, Options
from bench.sections import cold
from bench.servers import UNTHROTTLED, start_gateway
from bench.upstream import TEXT_TO_IMAGE, hit_body, running_fake, write_bodies
from tests.fakes import ok

WORK = Path(__file__).resolve().parent / "work"


# Leaf frames of a thread that is waiting, not working: left out of the shares.
IDLE_LEAVES = ("Condition.wait (threading.py", "EpollSelector.select (selectors.py")


def parse_collapsed(text: str) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """(own, inclusive, per-thread) busy samples and their total, from py-spy's raw format:
    one line per distinct stack, "thread (tid): name;frame;...;leaf count". Samples whose
    leaf is an idle wait are dropped, so shares are of the time a thread was busy."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        n = int(count)
        total += n
        if frames[0].startswith("thread ("):
            threads[frames[0].split(": ", 1)[-1]] += n
            frames = frames[1:] or frames
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return own, inclusive, threads, total


def top(counter: Counter[str], total: int, n: int) -> list[str]:
    return [f"{100 * c / total:5.1f}%  {name}" for name, c in counter.most_common(n)]


def record(pid: int, seconds: float, out: Path, gil: bool) -> None:
    py_spy = shutil.which("py-spy") or str(Path(__import__("sys").executable).parent / "py-spy")
    command = [py_spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "250"]
    command += ["--format", "raw", "-o", str(out), "--threads"]
    if gil:
        command.append("--gil")
    subprocess.run(command, check=True, capture_output=True, timeout=seconds + 60)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hitprofile", description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--accept", default="image/png")
    p.add_argument("--gil", action="store_true", help="only threads holding the GIL (py-spy --gil)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--cold", type=int, default=0, metavar="N",
        help="cycle through N cached entries with a 64 MiB memory tier (the cold section)",
    )  # fmt: skip
    args = p.parse_args(argv)
    paths = tools.ensure_tools([])
    work = WORK / "profile"
    shutil.rmtree(work, ignore_errors=True)
    fixed, unique = write_bodies(work / "bodies")
    ctx = Context(Options(warmup=0), paths, work, fixed, unique)
    out = WORK / f"profile-{args.accept.replace('/', '-')}.txt"
    with running_fake(ok(noisy=True)) as fake:
        settings = {"memory_tier_bytes": cold.MEMORY_TIER} if args.cold else {}
        gateway = start_gateway(work, "gateway", fake.url, rate=UNTHROTTLED, settings=settings)
        try:
            assert gateway.pid is not None
            headers = {"Content-Type": "application/json", "Accept": args.accept}
            url = f"{gateway.url}{TEXT_TO_IMAGE}"
            if args.cold:
                template = cold.body_template(work)
                cold.fill(gateway.url, template, args.cold)
                job = wrk.WrkJob(url=url, body_file=template, accept=args.accept,
                                 connections=64, threads=2, duration=2 + args.seconds,
                                 first_seed=cold.FIRST_SEED, cycle=args.cold)  # fmt: skip
                load = threading.Thread(target=wrk.run, args=(paths["wrk"], job))
            else:
                httpx.post(url, content=hit_body(), headers=headers, timeout=120).raise_for_status()
                load = threading.Thread(
                    target=ctx.wrk,
                    args=(gateway.url, args.accept),
                    kwargs={"duration": 2 + args.seconds},
                )
            load.start()
            record(gateway.pid, args.seconds, out, args.gil)
            load.join()
        finally:
            gateway.stop()
    own, inclusive, threads, total = parse_collapsed(out.read_text())
    print(f"{total} busy samples of the gateway under wrk load, Accept: {args.accept}")
    print("\nby thread:")
    print("\n".join(top(threads, total, args.top)))
    print("\nby own time:")
    print("\n".join(top(own, total, args.top)))
    print("\nincluding callees:")
    print("\n".join(top(inclusive, total, args.top)))
    print(f"\ncollapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
