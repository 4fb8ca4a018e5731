"""docker-compose.yml and deploy/nginx.conf, checked without a Docker engine (there is none
here): the YAML parses into two gateway replicas on one Redis behind nginx, every setting
it passes is one the gateway knows, and nginx accepts the load balancer's configuration
(`nginx -t` on a copy whose replica names point at loopback; skipped without nginx)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.config import ENV_OVERRIDES, load_settings

ROOT = Path(__file__).resolve().parent.parent
yaml = pytest.importorskip("yaml")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_two_replicas_share_one_redis_behind_nginx() -> None:
    services = compose()["services"]
    assert {"redis", "gateway-a", "gateway-b", "nginx"} <= set(services)
    for name in ("gateway-a", "gateway-b"):
        env = services[name]["environment"]
        assert env["STABILITY_GATEWAY_REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["build"] == "."
    assert "noeviction" in services["redis"]["command"]
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert set(re.findall(r"server (gateway-[ab]):8080", conf)) == {"gateway-a", "gateway-b"}
    assert any("deploy/nginx.conf" in v for v in services["nginx"]["volumes"])


def test_every_setting_it_passes_is_known_and_valid() -> None:
    env = compose()["services"]["gateway-a"]["environment"]
    known = {*ENV_OVERRIDES, "STABILITY_API_KEY"}
    assert set(env) <= known, set(env) - known
    literal = {k: str(v) for k, v in env.items() if not str(v).startswith("$")}
    settings = load_settings(environ={"STABILITY_GATEWAY_CONFIG": str(ROOT / "config.toml"),
                                      **literal})  # fmt: skip
    assert settings.redis.url and settings.cache.blob_store == "redis"


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                    reason="nginx is not installed")  # fmt: skip
def test_nginx_accepts_the_load_balancer_config(tmp_path: Path) -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    local = conf.replace("gateway-a:8080", "127.0.0.1:18080").replace(
        "gateway-b:8080", "127.0.0.1:18081"
    )
    local = local.replace("listen 8080;", "listen 127.0.0.1:18079;")
    local = f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n" + local
    (tmp_path / "nginx.conf").write_text(local)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    done = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
         "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr
