"""What operators read, for real: Prometheus metrics summed over workers, the credits ledger,
the daily budget across workers, and JSON logs. Each gateway is `python -m gateway serve` in
front of the fake Stability server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.gateway_process import GatewayProcess, gateway_env
from tests.fakes.stability import FakeStability, error, ok

KEY = "sk-test-SECRET-operators-77aa"
ENGINE = "stable-diffusion-xl-1024-v1-0"
TEXT = f"/v1/generation/{ENGINE}/text-to-image"
ROUTE = "/v1/generation/{engine_id}/text-to-image"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.1, "backoff_jitter": 0, "cooldown": 0.1}


def body(prompt: str) -> dict[str, Any]:
    return {"text_prompts": [{"text": prompt}], "seed": 11}


@pytest.fixture
def fake() -> Iterator[FakeStability]:
    with FakeStability() as server:
        yield server


def start(tmp_path: Path, fake: FakeStability, *, workers: int = 1, config: str = "",
          **env: object) -> GatewayProcess:  # fmt: skip
    settings = dict(FAST, **env)
    if config:
        path = tmp_path / "config.toml"
        path.write_text(config)
        settings["config"] = path
    process = GatewayProcess(
        gateway_env(tmp_path / "cache", fake.url, "online", KEY, **settings),
        extra_args=["--workers", str(workers)] if workers > 1 else [],
        log_dir=tmp_path,
    ).start(timeout=30)
    process.wait_for_workers(workers)
    return process


def samples(gateway: GatewayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid"))
            out[(sample.name, labels)] = out.get((sample.name, labels), 0) + sample.value
    return out


def delta(after: dict[Any, float], before: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_move_by_exactly_what_happened(
    fake: FakeStability, tmp_path: Path, workers: int
) -> None:
    # No margin: every send is late after its grant by the time it is written, so each of
    # the 4 attempts is counted from its write (and counted in ratelimit_late_sends).
    gateway = start(tmp_path, fake, workers=workers, rate_margin=0)
    try:
        before = samples(gateway)
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            assert client.post(TEXT, json=body("miss then hit")).headers["x-cache"] == "MISS"
            assert client.post(TEXT, json=body("miss then hit")).headers["x-cache"] == "HIT"
            assert client.post(TEXT, json={"text_prompts": "a cat"}).status_code == 400
            fake.script(error(500), error(500), error(500))
            assert client.post(TEXT, json=body("fails")).status_code == 500
        after = samples(gateway)
    finally:
        gateway.stop()
    p = "stability_gateway_"
    requests = p + "requests_total"
    assert delta(after, before, requests, route=ROUTE, status="200", cache="MISS",
                 caller="anonymous") == 1  # fmt: skip
    assert delta(after, before, requests, route=ROUTE, status="200", cache="HIT",
                 caller="anonymous") == 1  # fmt: skip
    assert delta(after, before, requests, route=ROUTE, status="400", cache="none",
                 caller="anonymous") == 1  # fmt: skip
    assert delta(after, before, requests, route=ROUTE, status="500", cache="MISS",
                 caller="anonymous") == 1  # fmt: skip
    upstream = p + "upstream_requests_total"
    assert delta(after, before, upstream, route="v1/text-to-image", status="200") == 1
    assert delta(after, before, upstream, route="v1/text-to-image", status="500") == 3
    assert delta(after, before, p + "upstream_retries_total", reason="500") == 2
    assert delta(after, before, p + "credits_spent_total", route="v1/text-to-image",
                 caller="anonymous") == 2  # fmt: skip
    assert delta(after, before, p + "credits_saved_total", route="v1/text-to-image",
                 caller="anonymous") == 2  # fmt: skip
    assert delta(after, before, p + "request_duration_seconds_count", route=ROUTE,
                 cache="HIT") == 1  # fmt: skip
    assert after[(p + "cache_entries", ())] == 1
    assert after[(p + "cache_bytes", ())] > 0
    assert after[(p + "ratelimit_queue_depth", ())] == 0
    assert delta(after, before, p + "ratelimit_wait_seconds_count") == 4
    assert delta(after, before, p + "ratelimit_late_sends_total") == 4


def test_the_ledger_charges_calls_and_counts_what_hits_saved(
    fake: FakeStability, tmp_path: Path
) -> None:
    gateway = start(tmp_path, fake, config='[prices]\n"v1" = 3\n')
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            charged = [client.post(TEXT, json=body(f"scene {i}")) for i in range(3)]
            hits = [client.post(TEXT, json=body(f"scene {i % 3}")) for i in range(5)]
            assert [r.headers["x-credits-charged"] for r in charged] == ["3"] * 3
            assert [r.headers["x-credits-charged"] for r in hits] == ["0"] * 5
            fake.script(error(500), error(500), error(500))
            assert client.post(TEXT, json=body("a 500")).headers["x-credits-charged"] == "0"
            fake.script(ok(finish_reason="CONTENT_FILTERED"))
            filtered = client.post(TEXT, json=body("filtered"))
            assert filtered.status_code == 200 and filtered.headers["x-credits-charged"] == "0"
            stats = client.get("/cache/stats").json()
            ledger = client.get("/cache/ledger", params={"limit": 1000}).json()
            calls = client.get("/cache/ledger", params={"kind": "call", "limit": 1000}).json()
    finally:
        gateway.stop()
    assert (stats["credits_spent"], stats["credits_saved"]) == (9, 15)
    assert (stats["credits_spent_today"], stats["credits_saved_today"]) == (9, 15)
    assert stats["callers"]["anonymous"] == {"spent": 9, "spent_today": 9, "saved": 15,
                                             "saved_today": 15}  # fmt: skip
    (day,) = ledger["days"].values()
    assert (day["spent"], day["saved"], day["calls"], day["unknown"]) == (9, 15, 7, 0)
    charges = sorted((r["status"], r["credits"]) for r in calls["records"])
    assert charges == [(200, 0), (200, 3), (200, 3), (200, 3), (500, 0), (500, 0), (500, 0)]
    assert sum(r["images"] for r in ledger["records"] if r["kind"] == "hit") == 5
    assert KEY not in json.dumps(ledger)


async def _post_all(url: str, prompts: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return list(await asyncio.gather(*(client.post(TEXT, json=body(p)) for p in prompts)))


def test_the_daily_budget_refuses_before_any_call_and_hits_still_work(
    fake: FakeStability, tmp_path: Path
) -> None:
    gateway = start(tmp_path, fake, config='[prices]\n"v1" = 3\n', daily_credit_budget=7)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            assert client.post(TEXT, json=body("one")).status_code == 200
            assert client.post(TEXT, json=body("two")).status_code == 200
            refused = client.post(TEXT, json=body("three"))
            hit = client.post(TEXT, json=body("one"))
    finally:
        gateway.stop()
    assert refused.status_code == 429 and refused.json()["name"] == "budget_exceeded"
    assert set(refused.json()) == {"id", "name", "message"}
    assert 0 < int(refused.headers["retry-after"]) <= 86400
    assert len(fake.generation_calls()) == 2  # the refused request never went upstream
    assert hit.headers["x-cache"] == "HIT"


def test_two_workers_cannot_overspend_the_budget(fake: FakeStability, tmp_path: Path) -> None:
    fake.default = ok(delay=0.3)
    gateway = start(tmp_path, fake, workers=2, config='[prices]\n"v1" = 3\n',
                    daily_credit_budget=7)  # fmt: skip
    try:
        answers = asyncio.run(_post_all(gateway.url, [f"concurrent {i}" for i in range(10)]))
    finally:
        gateway.stop()
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 2 + [429] * 8, statuses
    assert len(fake.generation_calls()) == 2


def test_json_logs_one_object_per_line(fake: FakeStability, tmp_path: Path) -> None:
    gateway = start(tmp_path, fake, log_format="json")
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            client.post(TEXT, json=body("json"), headers={"Authorization": f"Bearer {KEY}"})
            refused = client.post(TEXT, json={"text_prompts": "a cat"})
    finally:
        gateway.stop()  # every line written: an access line follows its answer
    logs = gateway.logs()
    objects = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert len(objects) >= 4
    access = [o for o in objects if o.get("logger") == "gateway.access"]
    miss, error_line = access[0], access[1]
    for field in ("time", "level", "pid", "route", "status", "cache", "key", "duration_ms",
                  "upstream_status", "attempts", "credits", "error_name", "error_id"):  # fmt: skip
        assert field in miss, field
    assert (miss["route"], miss["status"], miss["cache"], miss["upstream_status"]) == (
        ROUTE, 200, "MISS", 200)  # fmt: skip
    assert (error_line["error_name"], error_line["error_id"]) == (
        "invalid_prompts", refused.json()["id"])  # fmt: skip
    assert KEY not in logs
