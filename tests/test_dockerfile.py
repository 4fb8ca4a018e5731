"""The Dockerfile, checked without a Docker engine: its layer order, its dependency step
run for real, its start command run locally, and what `pip install .` puts in the image."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import setuptools  # type: ignore[import-untyped,unused-ignore]

from tests.fakes import GatewayProcess
from tests.fakes.raw_http import exchange, request_bytes

ROOT = Path(__file__).resolve().parent.parent
PATH = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        word, _, rest = whole.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def env_of_image() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_dependencies_are_a_layer_of_their_own_before_the_code() -> None:
    steps = instructions()
    code_copy = next(
        i for i, (w, rest) in enumerate(steps) if w == "COPY" and {"gateway", "."} & {*rest.split()}
    )
    deps = next(i for i, (w, rest) in enumerate(steps) if w == "RUN" and "-r " in rest)
    assert deps < code_copy
    copies_before = [rest for w, rest in steps[:deps] if w == "COPY"]
    assert copies_before == ["pyproject.toml ./"]  # code changes do not invalidate the layer
    install = next(rest for w, rest in steps[code_copy:] if w == "RUN" and "pip install" in rest)
    assert "--no-deps" in install


def test_the_dependency_step_lists_exactly_pyprojects_dependencies() -> None:
    run = next(rest for w, rest in instructions() if w == "RUN" and "-r " in rest)
    listing = run.split("&&")[0].split(">")[0].strip()  # python -c "..." > requirements
    assert listing.startswith("python ")
    command = shlex.split(listing)
    done = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True,
                          text=True, check=True)  # fmt: skip
    with open(ROOT / "pyproject.toml", "rb") as fh:
        expected = tomllib.load(fh)["project"]["dependencies"]
    assert done.stdout.splitlines() == expected


def test_every_package_is_in_the_distribution() -> None:
    """`pip install .` in the image must carry gateway.routes, gateway.cli and the rest."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        tool = tomllib.load(fh)["tool"]["setuptools"]
    found = tool.get("packages")
    if not isinstance(found, list):
        found = setuptools.find_packages(str(ROOT), include=found["find"]["include"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("gateway", "cache")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= set(found)
    assert {"gateway.routes", "gateway.cli"} <= on_disk


def test_the_image_command_runs_with_workers_from_the_environment_and_warns_offline(
    tmp_path: Path,
) -> None:
    cmd = json.loads(next(rest for w, rest in instructions() if w == "CMD"))
    assert cmd[:2] == ["stability-gateway", "serve"]
    args = cmd[2:]
    for flag in ("--host", "--port"):  # GatewayProcess binds 127.0.0.1 on a free port
        i = args.index(flag)
        del args[i : i + 2]
    args = [str(ROOT / "config.toml") if a == "/app/config.toml" else a for a in args]
    image_env = env_of_image()
    assert image_env["STABILITY_GATEWAY_WORKERS"] == "1"
    env = {**image_env, "STABILITY_GATEWAY_CACHE_DIR": str(tmp_path / "cache"),
           "STABILITY_GATEWAY_WORKERS": "2", "STABILITY_GATEWAY_MAX_HEADERS": "20"}  # fmt: skip
    command = [sys.executable, "-m", "gateway", "serve", *args]
    with GatewayProcess(env, command=command, log_dir=tmp_path, cwd=tmp_path) as gateway:
        gateway.wait_for_workers(2)  # /healthz answers once the first one is up
        assert httpx.post(gateway.url + PATH, json={"text_prompts": [{"text": "d"}]},
                          timeout=60).headers["x-cache"] == "OFFLINE"  # fmt: skip
        # The server limits reach the worker processes too.
        refused = exchange(gateway.port, request_bytes("GET", "/healthz", [("X-A", "1")] * 30))
        assert refused.status == 431
        healthcheck = next(rest for w, rest in instructions() if w == "HEALTHCHECK")
        probe = shlex.split(healthcheck.split(" CMD ", 1)[1].replace(":8080/", f":{gateway.port}/"))
        assert probe[0] == "python"
        assert subprocess.run([sys.executable, *probe[1:]], timeout=30).returncode == 0
        logs = gateway.logs()
    first = logs.splitlines()[0]
    assert first.startswith("WARNING") and "OFFLINE" in first
    assert logs.count("Started server process") == 2
    assert os.environ.get("STABILITY_GATEWAY_WORKERS") is None  # nothing leaked into tests
