"""`python -m tests.fakes.stability --port N`: the fake Stability server on its own, and a
gateway in online mode in front of it, as the README's "Trying online mode locally" says."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.fakes import GatewayProcess, gateway_env
from tests.fakes.gateway_process import free_port

ROOT = Path(__file__).resolve().parent.parent
PATH = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
BODY = {"text_prompts": [{"text": "a lighthouse"}], "width": 1344, "height": 768}


def test_the_fake_runs_on_its_own_and_a_gateway_can_use_it(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILITY_")}
    env["PYTHONPATH"] = str(ROOT)
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.stability", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert fake.stdout is not None
        ready, _, _ = select.select([fake.stdout], [], [], 30)
        assert ready, "the fake printed nothing"
        line = fake.stdout.readline().decode()
        assert f"http://127.0.0.1:{port}" in line
        direct = httpx.post(f"http://127.0.0.1:{port}{PATH}", json=BODY,
                            headers={"Authorization": "Bearer sk-fake"}, timeout=30)  # fmt: skip
        assert direct.status_code == 200 and direct.json()["artifacts"]
        gateway_settings = gateway_env(tmp_path / "cache", upstream_url=f"http://127.0.0.1:{port}",
                                       api_key="sk-fake")  # fmt: skip
        with GatewayProcess(gateway_settings, log_dir=tmp_path) as gateway:
            assert httpx.get(gateway.url + "/healthz").json()["mode"] == "online"
            first = httpx.post(gateway.url + PATH, json=BODY, timeout=60)
            again = httpx.post(gateway.url + PATH, json=BODY, timeout=60)
        assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
        assert again.headers["x-cache"] == "HIT" and again.content == first.content
        fake.send_signal(signal.SIGINT)  # Ctrl-C
        assert fake.wait(timeout=20) == 0
        assert fake.stderr is not None
        assert b"Traceback" not in fake.stderr.read()
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.wait()
