from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.config import ConfigError, Settings, load_settings, settings_from_mapping

ROOT = Path(__file__).resolve().parent.parent


def test_config_toml_documents_exactly_the_embedded_defaults() -> None:
    with open(ROOT / "config.toml", "rb") as fh:
        assert settings_from_mapping(tomllib.load(fh)) == Settings()


def test_mode_defaults_to_offline_without_key_and_online_with_one(tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    missing.write_text("")
    env = {"STABILITY_GATEWAY_CONFIG": str(missing)}
    assert load_settings(environ=env).mode == "offline"
    assert load_settings(environ={**env, "STABILITY_API_KEY": "sk-x"}).mode == "online"
    replay = {**env, "STABILITY_API_KEY": "sk-x", "STABILITY_GATEWAY_MODE": "replay"}
    assert load_settings(environ=replay).mode == "replay"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[rate_limit]\nlimit = 10\n[cache]\ndir = "from-file"\n')
    s = load_settings(path, environ={"STABILITY_GATEWAY_RATE_LIMIT": "5",
                                     "STABILITY_GATEWAY_RATE_PERIOD": "2"})  # fmt: skip
    assert (s.rate_limit.limit, s.rate_limit.period_seconds, s.cache.dir) == (5, 2.0, "from-file")


def test_key_is_never_in_repr() -> None:
    s = Settings(api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(s)


@pytest.mark.parametrize(
    "text",
    ['[cache]\ndirr = "x"\n', "[nope]\n", '[gateway]\nmode = "sideways"\n',
     "[rate_limit]\nlimit = 0\n", "[rate_limit]\nlimit = 'many'\n", "not toml ["],
)  # fmt: skip
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_settings(path, environ={})


def test_memory_limiter_with_several_workers_is_refused(tmp_path: Path, capsys) -> None:
    from gateway.cli import main

    path = tmp_path / "c.toml"
    path.write_text('[rate_limit]\nbackend = "memory"\n')
    assert main(["serve", "--config", str(path), "--workers", "2"]) == 2
    assert "per process" in capsys.readouterr().err


def test_a_hung_upstream_is_answered_within_two_minutes_by_default() -> None:
    """Issue 8: the seeds' client waits 60-120 s; the gateway answers first, and does not
    resend a request that was sent whole (it may have been charged)."""
    t = Settings().timeouts
    assert (t.read_seconds, t.deadline_seconds, t.lease_seconds) == (60, 120, 5)
    assert Settings().retry.retry_read_timeouts is False
