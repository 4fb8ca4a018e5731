"""Faults a gateway must ride out, for real: a full disk (a tmpfs of a few MiB), a read-only
or corrupt cache folder (a read-only bind mount, a garbage database), `kill -9` of the worker
holding a lease or with requests queued for the rate limit, and a gateway listening beyond
loopback without an admin token. Every gateway is `python -m gateway serve` on loopback in
front of the fake Stability server; traffic goes to 127.0.0.1 only.

Mounting needs root (CI runs as root); where `mount` is refused the disk tests are skipped
with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.gateway_process import REPO_ROOT, GatewayProcess, gateway_env
from tests.fakes.stability import FakeStability, count_max_in_window, hang, ok

KEY = "sk-test-SECRET-faults-0c1d2e3f"
TEXT = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.1, "backoff_jitter": 0, "cooldown": 0.1}


def body(prompt: str) -> dict[str, Any]:
    return {"text_prompts": [{"text": prompt}], "seed": 7, "width": 1344, "height": 768}


def post(gateway: GatewayProcess, prompt: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(gateway.url + TEXT, json=body(prompt), timeout=timeout)


@contextlib.contextmanager
def mounted(target: Path, *options: str) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode}): needs root")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill the file system of `disk` until `leave` bytes are free."""
    filler = disk / f"filler-{uuid.uuid4().hex[:6]}"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with filler.open("wb") as out, contextlib.suppress(OSError):
        out.write(b"\0" * max(free - leave, 0))
    return filler


def value_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.val"))


def entries(gateway: GatewayProcess) -> int:
    return int(httpx.get(gateway.url + "/cache/stats", timeout=10).json()["entries"])


@pytest.fixture
def fake() -> Iterator[FakeStability]:
    with FakeStability() as server:
        yield server


def test_a_full_disk_answers_paid_images_uncached_and_recovers(
    fake: FakeStability, tmp_path: Path
) -> None:
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=24m", "tmpfs") as disk:
        cache = disk / "cache"
        env = gateway_env(cache, fake.url, "online", KEY, **FAST)
        with GatewayProcess(env, log_dir=tmp_path) as gateway:
            fake.default = ok(noisy=True)  # 2.6 MB images
            stored = post(gateway, "stored before the disk filled")
            assert stored.headers["x-cache"] == "MISS"
            # The answer goes out before the store: wait until the entry is in.
            wait_for(lambda: entries(gateway) == 1)
            blobs_before = value_files(cache / "blobs")
            assert len(blobs_before) == 1
            filler = fill(disk, leave=512 * 1024)  # less than one image

            paid = post(gateway, "paid while the disk is full")
            assert paid.status_code == 200 and paid.headers["x-cache"] == "MISS"
            assert "not cached" in paid.headers["warning"]
            assert len(paid.json()["artifacts"][0]["base64"]) > 3_000_000  # the image itself

            def store_errors() -> list[str]:
                return [line for line in gateway.logs().splitlines()
                        if "ERROR" in line and "could not store" in line]  # fmt: skip

            wait_for(lambda: len(store_errors()) >= 1)  # the store is tried after the answer
            errors = store_errors()
            assert len(errors) == 1 and str(cache) in errors[0]
            assert value_files(cache / "blobs") == blobs_before  # no orphan blob
            # Its lease was released: the same request again goes straight to the upstream.
            calls = len(fake.generation_calls())
            started = time.monotonic()
            again = post(gateway, "paid while the disk is full")
            assert again.headers["x-cache"] == "MISS" and len(fake.generation_calls()) == calls + 1
            assert time.monotonic() - started < 4  # not held by a lease (5 s)

            fill(disk, leave=0)  # completely full: not a byte left
            hit = post(gateway, "stored before the disk filled")
            assert hit.status_code == 200 and hit.headers["x-cache"] == "HIT"
            miss = post(gateway, "a miss on a completely full disk")
            assert miss.status_code == 200 and miss.headers["x-cache"] == "MISS"
            stats = httpx.get(gateway.url + "/cache/stats", timeout=10)
            assert stats.status_code == 200 and stats.json()["entries"] == 1

            for extra in disk.glob("filler-*"):
                extra.unlink()
            assert not filler.exists()
            healed = post(gateway, "after space was freed")
            assert healed.headers["x-cache"] == "MISS" and "warning" not in healed.headers
            assert post(gateway, "after space was freed").headers["x-cache"] == "HIT"
            stats = httpx.get(gateway.url + "/cache/stats", timeout=10).json()
            assert stats["entries"] == 2 and stats["store_failures"] >= 2


def one_line_error(done: subprocess.CompletedProcess[str], folder: Path) -> str:
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(folder) in lines[0] and "STABILITY_GATEWAY_CACHE_DIR" in lines[0]
    return lines[0]


def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILITY_")}
    env.update(STABILITY_GATEWAY_CACHE_DIR=str(cache), PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=env, text=True,
                          capture_output=True, timeout=60, cwd=cache.parent)  # fmt: skip


def test_a_read_only_cache_folder_is_one_clear_line(fake: FakeStability, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = gateway_env(cache, mode="offline")
    with GatewayProcess(env, log_dir=tmp_path) as gateway:
        post(gateway, "one entry")
    with mounted(cache, "--bind", "-o", "ro", str(cache)):
        with pytest.raises(OSError):
            (cache / "probe").write_bytes(b"x")  # root included: it really is read-only
        message = one_line_error(run_cli("serve", "--port", "1", cache=cache), cache)
        assert "read-only" in message
        one_line_error(run_cli("cache", "ls", cache=cache), cache)


def test_a_corrupt_index_is_one_clear_line(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index.sqlite3").write_bytes(b"not a database at all " * 500)
    message = one_line_error(run_cli("serve", "--port", "1", cache=cache), cache)
    assert "corrupt" in message
    one_line_error(run_cli("cache", "stats", cache=cache), cache)


def in_background(gateway: GatewayProcess, prompt: str) -> threading.Thread:
    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):
            post(gateway, prompt, timeout=120)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def wait_for(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_lease_of_a_killed_worker_blocks_the_key_for_seconds_only(
    fake: FakeStability, tmp_path: Path
) -> None:
    """The default lease (5 s) and deadline (120 s): before leases were renewed, the next
    request waited for the dead holder's lease for the whole deadline."""
    env = gateway_env(tmp_path / "cache", fake.url, "online", KEY, **FAST)
    gateway = GatewayProcess(env, log_dir=tmp_path).start()
    try:
        fake.default = hang(60)
        in_background(gateway, "held by a worker that dies")
        wait_for(lambda: len(fake.generation_calls()) == 1)
        assert gateway.pid is not None
        os.kill(gateway.pid, signal.SIGKILL)
        gateway.stop()
        fake.default = ok()
        gateway.start()
        started = time.monotonic()
        answer = post(gateway, "held by a worker that dies")
        elapsed = time.monotonic() - started
    finally:
        gateway.stop()
    assert answer.status_code == 200 and answer.headers["x-cache"] == "MISS"
    assert elapsed < 12, elapsed  # within the lease (5 s), not the 120 s deadline
    print(f"\nanswered {elapsed:.1f} s after the restart")


async def _post_many(url: str, prompts: list[str]) -> None:
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        await asyncio.gather(
            *(client.post(TEXT, json=body(p)) for p in prompts), return_exceptions=True
        )


def test_rate_limit_turns_of_requests_that_died_hold_nobody_back(
    fake: FakeStability, tmp_path: Path
) -> None:
    """150 requests queue for a limit of 5 per 4 s, then the worker is killed. Their turns
    were never used: a new request waits for the window of the sends that really happened
    and for the dead tickets to expire (5 s), not for the 120 s the dead queue would take;
    no window of the upstream's arrivals ever holds more than 5."""
    env = gateway_env(tmp_path / "cache", fake.url, "online", KEY, **FAST, rate_limit=5,
                      rate_period=4, rate_margin=0.1, rate_max_wait=300,
                      deadline=300)  # fmt: skip
    gateway = GatewayProcess(env, log_dir=tmp_path).start()
    prompts = [f"queued {i}" for i in range(155)]
    sender = threading.Thread(
        target=asyncio.run, args=(_post_many(gateway.url, prompts),), daemon=True
    )
    try:
        sender.start()
        wait_for(lambda: len(fake.generation_calls()) == 5)
        time.sleep(1.0)  # the other 150 have joined the queue
        assert len(fake.generation_calls()) == 5
        assert gateway.pid is not None
        os.kill(gateway.pid, signal.SIGKILL)
        gateway.stop()
        gateway.start()
        started = time.monotonic()
        answer = post(gateway, "after the crash", timeout=200)
        elapsed = time.monotonic() - started
    finally:
        gateway.stop()
    assert answer.status_code == 200
    arrivals = [c.t for c in fake.generation_calls()]
    assert len(arrivals) == 6 and count_max_in_window(arrivals, 4.0) <= 5
    assert elapsed < 30, elapsed  # the dead queue alone would have been 120 s
    print(f"\nanswered {elapsed:.1f} s after the restart")


def test_beyond_loopback_without_a_token_the_inspection_api_is_closed(tmp_path: Path) -> None:
    env = gateway_env(tmp_path / "cache", mode="offline")
    with GatewayProcess(env, log_dir=tmp_path, extra_args=["--host", "0.0.0.0"]) as gateway:
        for path in ("/cache/stats", "/cache/entries", f"/cache/entries/{'a' * 64}"):
            closed = httpx.get(gateway.url + path, timeout=10)
            assert closed.status_code == 401 and set(closed.json()) == {"id", "name", "message"}
            assert "STABILITY_GATEWAY_ADMIN_TOKEN" in closed.json()["message"]
        assert httpx.delete(gateway.url + f"/cache/entries/{'a' * 64}").status_code == 401
        assert post(gateway, "generation still works").status_code == 200
        start = [line for line in gateway.logs().splitlines() if "listening on 0.0.0.0" in line]
        assert len(start) == 1 and "WARNING" in start[0]
    env["STABILITY_GATEWAY_ADMIN_TOKEN"] = "admin-secret-token"
    with GatewayProcess(env, log_dir=tmp_path, extra_args=["--host", "0.0.0.0"]) as gateway:
        open_ = httpx.get(gateway.url + "/cache/stats",
                          headers={"Authorization": "Bearer admin-secret-token"})  # fmt: skip
        assert open_.status_code == 200


def test_one_access_line_per_request_with_the_error_id(fake: FakeStability, tmp_path: Path) -> None:
    env = gateway_env(tmp_path / "cache", fake.url, "online", KEY, **FAST)
    with GatewayProcess(env, log_dir=tmp_path) as gateway:
        miss = post(gateway, "logged")
        hit = post(gateway, "logged")
        refused = httpx.post(gateway.url + TEXT, json={"text_prompts": "a cat"})
        httpx.get(gateway.url + "/cache/stats")
    logs = gateway.logs()  # after the stop: an access line is written after its answer
    access = [line for line in logs.splitlines() if "gateway.access" in line]
    assert len(access) == 4, access
    key = miss.headers["x-cache-key"][:16]
    assert re.search(rf"POST {TEXT} 200 cache=MISS key={key} [\d.]+ms upstream=200 attempts=1",
                     access[0])  # fmt: skip
    assert "cache=HIT" in access[1] and "upstream=- attempts=0" in access[1]
    error_id = refused.json()["id"]
    assert "400 cache=- key=- " in access[2] and f"error=invalid_prompts id={error_id}" in access[2]
    assert "reason=" in access[2] and "must be a list" in access[2]
    assert "GET /cache/stats 200" in access[3]
    assert not re.search(r'"POST /v1/\S+ HTTP/1.1" 200', logs)  # uvicorn's own line is off
    assert hit.status_code == 200 and KEY not in logs
