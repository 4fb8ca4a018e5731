"""Named callers and cache policy per request, end to end: tokens (known, unknown, required),
private scope, a caller's own rate and budget, the fair queue across workers, X-Cache-TTL,
max-age, namespaces and random-seed variants. Gateways are `python -m gateway serve` in
front of the fake Stability server on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.gateway_process import REPO_ROOT, GatewayProcess, gateway_env
from tests.fakes.stability import FakeStability, error

KEY = "sk-test-SECRET-callers-5e6f"
ENGINE = "stable-diffusion-xl-1024-v1-0"
TEXT = f"/v1/generation/{ENGINE}/text-to-image"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.1, "backoff_jitter": 0, "cooldown": 0.1}
TOKENS = {
    "alice": "sgw_alice-token-0000000000000000000000000",
    "pat": "sgw_private-pat-token-00000000000000000000",
    "batch-job": "sgw_batch-job-token-000000000000000000000",
    "dev": "sgw_dev-token-00000000000000000000000000000",
    "slow": "sgw_slow-token-0000000000000000000000000000",
    "thrifty": "sgw_thrifty-token-000000000000000000000000",
}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


CALLERS = f"""
[callers.alice]
token_sha256 = "{sha(TOKENS["alice"])}"

[callers.pat]
token_sha256 = "{sha(TOKENS["pat"])}"
cache_scope = "private"

[callers.batch-job]
token_sha256 = "{sha(TOKENS["batch-job"])}"
priority = "batch"

[callers.dev]
token_sha256 = "{sha(TOKENS["dev"])}"

[callers.slow]
token_sha256 = "{sha(TOKENS["slow"])}"
requests_per_minute = 2

[callers.thrifty]
token_sha256 = "{sha(TOKENS["thrifty"])}"
daily_credit_budget = 2
"""


def as_caller(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def body(prompt: str, seed: int = 21) -> dict[str, Any]:
    return {"text_prompts": [{"text": prompt}], "seed": seed}


@pytest.fixture
def fake() -> Iterator[FakeStability]:
    with FakeStability() as server:
        yield server


def start(tmp_path: Path, fake: FakeStability, *, workers: int = 1, config: str = CALLERS,
          name: str = "gw", **env: object) -> GatewayProcess:  # fmt: skip
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.toml").write_text(config)
    process = GatewayProcess(
        gateway_env(
            folder / "cache",
            fake.url,
            "online",
            KEY,
            config=folder / "config.toml",
            **{**FAST, **env},
        ),
        extra_args=["--workers", str(workers)] if workers > 1 else [],
        log_dir=folder,
    ).start(timeout=30)
    process.wait_for_workers(workers)
    return process


def image_of(response: httpx.Response) -> bytes:
    return base64.b64decode(response.json()["artifacts"][0]["base64"])


# -- tokens --------------------------------------------------------------------------------


def test_caller_tokens_name_callers_and_never_go_further(
    fake: FakeStability, tmp_path: Path
) -> None:
    gateway = start(tmp_path, fake)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            known = client.post(TEXT, json=body("tokens"), headers=as_caller("alice"))
            unknown = client.post(TEXT, json=body("tokens"), headers={"Authorization": "Bearer x"})
            stats = client.get("/cache/stats").json()
    finally:
        gateway.stop()
    logs = gateway.logs()
    assert known.headers["x-cache"] == "MISS" and unknown.headers["x-cache"] == "HIT"
    upstream_auth = {c.headers.get("authorization") for c in fake.generation_calls()}
    assert upstream_auth == {f"Bearer {KEY}"}  # the gateway's key; never a caller's token
    assert "caller=alice" in logs and "caller=anonymous" in logs
    assert all(token not in logs for token in TOKENS.values()) and KEY not in logs
    assert stats["callers"]["alice"]["spent"] == 2 and stats["callers"]["anonymous"]["saved"] == 2


def test_with_require_caller_token_unknown_callers_get_401_before_the_cache(
    fake: FakeStability, tmp_path: Path
) -> None:
    gateway = start(tmp_path, fake, require_caller_token="true")
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            made = client.post(TEXT, json=body("guarded"), headers=as_caller("alice"))
            for headers in ({}, {"Authorization": "Bearer not-a-caller"}):
                refused = client.post(TEXT, json=body("guarded"), headers=headers)
                assert refused.status_code == 401 and refused.json()["name"] == "unauthorized"
                assert set(refused.json()) == {"id", "name", "message"}
                assert "x-cache" not in refused.headers  # refused before any cache lookup
            v2 = client.post("/v2beta/stable-image/generate/core", data={"prompt": "x"})
            assert v2.status_code == 401 and set(v2.json()) == {"id", "name", "errors"}
            assert client.get("/healthz").status_code == 200  # not a Stability route
    finally:
        gateway.stop()
    assert made.status_code == 200 and len(fake.generation_calls()) == 1


def test_a_private_caller_has_entries_of_its_own(fake: FakeStability, tmp_path: Path) -> None:
    gateway = start(tmp_path, fake)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            shared = client.post(TEXT, json=body("private"), headers=as_caller("alice"))
            own = client.post(TEXT, json=body("private"), headers=as_caller("pat"))
            again = client.post(TEXT, json=body("private"), headers=as_caller("pat"))
            entries = client.get("/cache/entries").json()
    finally:
        gateway.stop()
    assert (shared.headers["x-cache"], own.headers["x-cache"], again.headers["x-cache"]) == (
        "MISS", "MISS", "HIT")  # fmt: skip
    assert shared.headers["x-cache-key"] != own.headers["x-cache-key"]
    assert len(fake.generation_calls()) == 2 and entries["total"] == 2
    assert {e.get("caller") for e in entries["entries"]} == {None, "pat"}


def test_a_callers_own_rate_and_budget_hold_only_that_caller(
    fake: FakeStability, tmp_path: Path
) -> None:
    gateway = start(tmp_path, fake)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            slow = [client.post(TEXT, json=body(f"slow {i}"), headers=as_caller("slow"))
                    for i in range(3)]  # fmt: skip
            others = client.post(TEXT, json=body("others"), headers=as_caller("alice"))
            first = client.post(TEXT, json=body("thrifty 1"), headers=as_caller("thrifty"))
            second = client.post(TEXT, json=body("thrifty 2"), headers=as_caller("thrifty"))
            not_thrifty = client.post(TEXT, json=body("thrifty 2"), headers=as_caller("alice"))
            thrifty_hit = client.post(TEXT, json=body("thrifty 1"), headers=as_caller("thrifty"))
    finally:
        gateway.stop()
    assert [r.status_code for r in slow] == [200, 200, 429]
    assert slow[2].json()["name"] == "rate_limited" and int(slow[2].headers["retry-after"]) >= 1
    assert others.status_code == 200
    assert first.status_code == 200 and second.status_code == 429
    assert second.json()["name"] == "budget_exceeded" and "retry-after" in second.headers
    assert not_thrifty.status_code == 200  # the same request, another caller's budget
    assert thrifty_hit.headers["x-cache"] == "HIT"  # hits cost no budget


# -- fair queueing --------------------------------------------------------------------------


async def _queue_then_dev(url: str, fake: FakeStability) -> tuple[int, int, list[int]]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        tasks = []
        for i in range(60):
            tasks.append(asyncio.ensure_future(client.post(
                TEXT, json=body(f"batch {i:02d}"), headers=as_caller("batch-job"))))  # fmt: skip
            await asyncio.sleep(0.05)  # so that "their order" is defined
        while len(fake.generation_calls()) < 5:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        before = len(fake.generation_calls())
        dev = await client.post(TEXT, json=body("dev"), headers=as_caller("dev"))
        answers = await asyncio.gather(*tasks)
    assert dev.status_code == 200 and {a.status_code for a in answers} == {200}
    prompts = [json.loads(c.body)["text_prompts"][0]["text"] for c in fake.generation_calls()]
    order = [int(p.split()[1]) for p in prompts if p.startswith("batch")]
    return before, prompts.index("dev"), order


@pytest.mark.parametrize("workers", [1, 2])
def test_interactive_requests_go_before_a_batch_backlog(
    fake: FakeStability, tmp_path: Path, workers: int
) -> None:
    """batch-job queues 60 requests against 5 per 2 s; then dev sends one: it reaches the
    upstream within the next 2 slots, and batch-job's requests go in their order (with 2
    workers, neighbours may swap: see below)."""
    gateway = start(tmp_path, fake, workers=workers, rate_limit=5, rate_period=2,
                    rate_margin=0.05, rate_max_wait=120, deadline=120)  # fmt: skip
    try:
        before, dev_at, order = asyncio.run(_queue_then_dev(gateway.url, fake))
    finally:
        gateway.stop()
    print(f"\n{workers} worker(s): {before} batch calls before dev asked; dev was call {dev_at}")
    assert dev_at - before < 2  # one of the next 2 slots
    if workers == 1:  # one process's joins are taken in their order (a FIFO lock)
        assert order == list(range(60))
    else:
        # Each worker joins the shared queue in its own SQLite transaction; a join held up
        # in its worker (waiting for the other's lock, or for a core on a busy machine) can
        # commit after a request sent 50 ms later, and a free slot goes to whoever has
        # joined (seen in CI: [0, 2, 1, 3, ...]). Neighbours may swap; none may pass a
        # request sent 200 ms (4 requests) before it.
        assert sorted(order) == list(range(60))
        place = {n: i for i, n in enumerate(order)}
        assert all(place[a] < place[b] for a in range(60) for b in range(a + 4, 60)), order
    assert fake.max_in_window(2.0) <= 5


# -- cache policy per request ----------------------------------------------------------------


def test_ttl_max_age_and_namespaces(fake: FakeStability, tmp_path: Path) -> None:
    gateway = start(tmp_path, fake, name="policy")
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            short = client.post(TEXT, json=body("ttl"), headers={"X-Cache-TTL": "1"})
            assert client.post(TEXT, json=body("ttl")).headers["x-cache"] == "HIT"
            meta = client.get(f"/cache/entries/{short.headers['x-cache-key']}").json()
            assert meta["expires_at"] - meta["created_at"] == pytest.approx(1)
            time.sleep(1.3)
            assert client.post(TEXT, json=body("ttl")).headers["x-cache"] == "MISS"  # expired
            too_long = client.post(TEXT, json=body("ttl"), headers={"X-Cache-TTL": "99999999"})
            assert too_long.status_code == 400 and too_long.json()["name"] == "bad_request"

            made = client.post(TEXT, json=body("age"))
            young = client.post(TEXT, json=body("age"), headers={"Cache-Control": "max-age=60"})
            time.sleep(1.1)
            old = client.post(TEXT, json=body("age"), headers={"Cache-Control": "max-age=1"})
            fake.script(error(500), error(500), error(500))
            stale = client.post(TEXT, json=body("age"), headers={
                "Cache-Control": "max-age=0", "X-Allow-Cached": "true"})  # fmt: skip
            assert (made.headers["x-cache"], young.headers["x-cache"]) == ("MISS", "HIT")
            assert old.headers["x-cache"] == "MISS" and image_of(old) != image_of(made)
            assert stale.headers["x-cache"] == "STALE" and image_of(stale) == image_of(old)

            one = client.post(TEXT, json=body("ns"), headers={"X-Cache-Namespace": "team-a"})
            two = client.post(TEXT, json=body("ns"), headers={"X-Cache-Namespace": "team_b"})
            one_again = client.post(TEXT, json=body("ns"), headers={"X-Cache-Namespace": "team-a"})
            bad = client.post(TEXT, json=body("ns"), headers={"X-Cache-Namespace": "Team A"})
    finally:
        gateway.stop()
    assert (one.headers["x-cache"], two.headers["x-cache"]) == ("MISS", "MISS")
    assert one.headers["x-cache-key"] != two.headers["x-cache-key"]
    assert one_again.headers["x-cache"] == "HIT"
    assert bad.status_code == 400 and "X-Cache-Namespace" in bad.json()["message"]


def test_random_seed_variants_fill_a_bucket_then_cycle(fake: FakeStability, tmp_path: Path) -> None:
    gateway = start(tmp_path, fake, name="variants", random_seed_policy="variants", variants=3)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            fills = [client.post(TEXT, json=body("variants", seed=0)) for _ in range(3)]
            calls = len(fake.generation_calls())
            served = [client.post(TEXT, json=body("variants", seed=0)) for _ in range(6)]
            fixed = client.post(TEXT, json=body("variants", seed=5))  # not a random seed
            variant_key = served[0].headers["x-cache-key"]
            shown = client.get(f"/cache/entries/{variant_key}").json()
    finally:
        gateway.stop()
    assert calls == 3 and len(fake.generation_calls()) == 4
    assert [r.headers["x-cache"] for r in fills] == ["MISS"] * 3
    assert [r.headers["x-cache-variant"] for r in fills] == ["1/3", "2/3", "3/3"]
    images = [image_of(r) for r in fills]
    assert len(set(images)) == 3  # three distinct images
    assert [r.headers["x-cache"] for r in served] == ["HIT"] * 6
    assert [image_of(r) for r in served] == images + images  # in turn
    assert [r.headers["x-cache-variant"] for r in served] == ["1/3", "2/3", "3/3"] * 2
    assert "x-cache-variant" not in fixed.headers
    assert [v["variant"] for v in shown["variants"]] == [1, 2, 3]
    # the CLI shows them too
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILITY_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        STABILITY_GATEWAY_CACHE_DIR=str(tmp_path / "variants" / "cache"),
        STABILITY_GATEWAY_RANDOM_SEED_POLICY="variants",
        STABILITY_GATEWAY_VARIANTS="3",
    )
    done = subprocess.run([sys.executable, "-m", "gateway", "cache", "show", variant_key],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [v["variant"] for v in json.loads(done.stdout)["variants"]] == [1, 2, 3]


def test_token_new_prints_a_token_once_and_the_table(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILITY_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run([sys.executable, "-m", "gateway", "token", "new", "render-farm",
                           "--priority", "batch"], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = next(
        line.strip() for line in done.stdout.splitlines() if line.strip().startswith("sgw_")
    )
    assert f'token_sha256 = "{sha(token)}"' in done.stdout
    assert "[callers.render-farm]" in done.stdout and 'priority = "batch"' in done.stdout
    table = done.stdout[done.stdout.index("[callers.") :]
    import tomllib

    from gateway.config import settings_from_mapping

    settings = settings_from_mapping(tomllib.loads(table))
    assert settings.callers["render-farm"].token_sha256 == sha(token)
    bad = subprocess.run([sys.executable, "-m", "gateway", "token", "new", "Bad Name"], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2
