"""`stability-gateway generate` end to end: the command as a subprocess, the real gateway as
another, FakeStability behind it. Checks files, records, output and exit codes, and that a
rerun of the same script costs no upstream call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.client import AssetStore
from tests.fakes import FakeStability, GatewayProcess, error, gateway_env, image_size
from tests.fakes.gateway_process import REPO_ROOT, free_port

KEY = "sk-test-SECRET-command-3f9e0b2d"
FAST: dict[str, Any] = {
    "retry_attempts": 3, "backoff_initial": 0.05, "backoff_max": 0.2, "backoff_jitter": 0,
    "cooldown": 0.1,
}  # fmt: skip


@pytest.fixture(scope="module")
def gateway(
    shared_fake: FakeStability, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("command")
    env = gateway_env(tmp / "cache", upstream_url=shared_fake.url, mode="online", api_key=KEY,
                      **FAST)  # fmt: skip
    with GatewayProcess(env, log_dir=tmp) as process:
        yield process
    assert KEY not in process.logs() and "sk-caller-SECRET" not in process.logs()


def generate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m gateway generate ...` with the repo on the path and no STABILITY_* set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILITY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "160"
    return subprocess.run(
        [sys.executable, "-m", "gateway", "generate", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def write_script(path: Path, descriptions: list[str | None]) -> Path:
    segments = [
        {"narration": f"part {i}"}
        if d is None
        else {"narration": f"part {i}", "image_description": d}
        for i, d in enumerate(descriptions, 1)
    ]
    path.write_text(json.dumps({"title": "demo", "segments": segments}, ensure_ascii=False))
    return path


def summary(result: subprocess.CompletedProcess[str]) -> str:
    """The summary line: the last line of stdout."""
    return result.stdout.strip().splitlines()[-1]


def test_ten_segments_then_a_rerun_that_costs_nothing(
    gateway: GatewayProcess, fake: FakeStability, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "script.json", [f"Scene {i} of the harbour" for i in range(10)]
    )
    args = (str(script), "--project", "harbour", "--gateway", gateway.url, "--root", "out")
    first = generate(*args, cwd=tmp_path)
    print(f"\nfirst run: {summary(first)}")
    assert first.returncode == 0, first.stderr
    assert summary(first) == (
        "10 images: 0 from cache, 10 generated, 0 failed; credits: 20 spent, 0 saved"
    )
    assert len(fake.generation_calls()) == 10
    folder = tmp_path / "out" / "harbour" / "assets"
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"image_{i:03d}.png" for i in range(1, 11)]
    assert all(image_size(f.read_bytes()) == (1920, 1080) for f in files)
    before = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in files}
    store = AssetStore.under(tmp_path / "out")
    records = store.project("harbour")
    assert [(a.index, a.status, a.asset_type) for a in records] == [
        (i, "completed", "image") for i in range(1, 11)
    ]
    assert [a.file_path for a in records] == [
        f"out/harbour/assets/image_{i:03d}.png" for i in range(1, 11)
    ]
    meta = records[0].meta
    assert meta["description"] == "Scene 0 of the harbour"
    assert meta["prompt"].startswith("Scene 0 of the harbour, cinematic lighting")
    assert meta["negative_prompt"] == "blurry, low quality, watermark, text"
    assert (meta["x_cache"], meta["generated_size"], meta["final_size"]) == (
        "MISS",
        [1344, 768],
        [1920, 1080],
    )
    assert meta["seed"] is not None and len(meta["cache_key"]) == 64 and meta["credits"] == 2

    fake.reset()
    rerun = generate(*args, cwd=tmp_path)
    print(f"rerun:     {summary(rerun)}")
    assert rerun.returncode == 0, rerun.stderr
    assert fake.generation_calls() == []
    assert summary(rerun) == (
        "10 images: 10 from cache, 0 generated, 0 failed; credits: 0 spent, 20 saved"
    )
    after = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in sorted(folder.iterdir())}
    assert after == before  # the same files, not even rewritten
    again = store.project("harbour")
    assert [a.id for a in again] == [a.id for a in records]  # updated, not duplicated
    assert [a.meta["cache_key"] for a in again] == [a.meta["cache_key"] for a in records]
    assert [a.meta["seed"] for a in again] == [a.meta["seed"] for a in records]
    assert {a.meta["x_cache"] for a in again} == {"HIT"}
    assert "HIT" in rerun.stdout and "image_010.png" in rerun.stdout  # the table
    store.close()


def test_under_the_threshold_exits_1_and_lists_the_failures(
    gateway: GatewayProcess, fake: FakeStability, tmp_path: Path
) -> None:
    for broken in ("Failing shot 3", "Failing shot 6", "Failing shot 9"):
        fake.for_prompt(broken, error(500))
    descriptions: list[str | None] = [f"Failing shot {i}" for i in range(1, 11)]
    descriptions.insert(4, None)  # a segment without an image keeps its place
    script = write_script(tmp_path / "script.json", descriptions)
    caller_key = "sk-caller-SECRET-command-9a8b7c"
    result = generate(str(script), "--project", "p", "--gateway", gateway.url,
                      "--api-key", caller_key, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert caller_key not in result.stdout + result.stderr
    assert summary(result).startswith("10 images: 0 from cache, 7 generated, 3 failed")
    assert "70%" in result.stderr and "80%" in result.stderr
    for position in (3, 7, 10):  # segment positions: the 5th segment has no description
        assert f"#{position} Failing shot" in result.stderr
    assert "Traceback" not in result.stderr
    store = AssetStore.under(tmp_path / "projects")
    records = {a.index: a for a in store.project("p")}
    assert sorted(records) == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    failed = sorted(i for i, a in records.items() if a.status == "failed")
    assert failed == [3, 7, 10]
    assert all("500" in (records[i].error or "") and records[i].file_path is None for i in failed)
    names = sorted(p.name for p in (tmp_path / "projects" / "p" / "assets").iterdir())
    assert names == [f"image_{i:03d}.png" for i in (1, 2, 4, 6, 8, 9, 11)]
    store.close()

    # A lower bar: the same failures pass; the others come from the cache.
    fake.reset()
    for broken in ("Failing shot 3", "Failing shot 6", "Failing shot 9"):
        fake.for_prompt(broken, error(500))
    lenient = generate(str(script), "--project", "p", "--gateway", gateway.url,
                       "--min-success", "0.5", cwd=tmp_path)  # fmt: skip
    assert lenient.returncode == 0, lenient.stderr
    assert summary(lenient).startswith("10 images: 7 from cache, 0 generated, 3 failed")
    assert len(fake.generation_calls()) == 3 * 3

    # Once the upstream recovers, a rerun asks only for the three that failed.
    fake.reset()
    healed = generate(str(script), "--project", "p", "--gateway", gateway.url, cwd=tmp_path)
    assert healed.returncode == 0, healed.stderr
    assert summary(healed).startswith("10 images: 7 from cache, 3 generated, 0 failed")
    assert len(fake.generation_calls()) == 3
    store = AssetStore.under(tmp_path / "projects")
    assert {a.status for a in store.project("p")} == {"completed"}
    assert len(store.project("p")) == 10
    store.close()


def test_style_from_config_and_a_glossary(
    gateway: GatewayProcess, fake: FakeStability, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[styles.noir]\nmodifiers = ["film noir", "dramatic shadows"]\nnegative_prompt = "color"\n'
        "[styles.noir.params]\ncfg_scale = 11\nsteps = 30\nseed = 99\n"
    )
    glossary = tmp_path / "glossary.toml"
    glossary.write_text('"一座寧靜的山景" = "A serene mountain landscape"\n')
    script = write_script(tmp_path / "s.json", ["一座寧靜的山景"])
    result = generate(str(script), "--project", "zh", "--gateway", gateway.url, "--style", "noir",
                      "--config", str(config), "--glossary", str(glossary), "--size", "1280x720",
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (call,) = fake.generation_calls()
    body = json.loads(call.body)
    assert body["text_prompts"] == [
        {"text": "A serene mountain landscape, film noir, dramatic shadows", "weight": 1},
        {"text": "color", "weight": -1},
    ]
    assert (body["cfg_scale"], body["steps"], body["seed"]) == (11, 30, 99)
    image = tmp_path / "projects" / "zh" / "assets" / "image_001.png"
    assert image_size(image.read_bytes()) == (1280, 720)


@pytest.mark.parametrize("case", ["missing", "not_json", "no_segments", "unknown_style",
                                  "unreachable", "bad_project"])  # fmt: skip
def test_usage_errors_exit_2_with_one_line(
    case: str, gateway: GatewayProcess, fake: FakeStability, tmp_path: Path
) -> None:
    script = write_script(tmp_path / "script.json", ["A quiet street"])
    url, style, project = gateway.url, "cinematic", "ok"
    if case == "missing":
        script = tmp_path / "nope.json"
    elif case == "not_json":
        script.write_text("{not json")
    elif case == "no_segments":
        script.write_text('{"scenes": []}')
    elif case == "unknown_style":
        style = "vaporwave"
    elif case == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    elif case == "bad_project":
        project = "../escape"
    result = generate(str(script), "--project", project, "--gateway", url, "--style", style,
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    expected = {
        "missing": "cannot read script", "not_json": "not valid JSON", "no_segments": "segments",
        "unknown_style": "unknown style 'vaporwave'", "unreachable": "gateway unreachable",
        "bad_project": "project id",
    }[case]  # fmt: skip
    assert expected in lines[0]
    assert fake.generation_calls() == []
    assert not (tmp_path / "projects").exists()
