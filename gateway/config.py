"""Settings: embedded defaults, overridden by a TOML file, overridden by the environment.

The embedded defaults below are the same values `config.toml` documents (a test keeps the
two in step), so the gateway starts with no file at all: offline, cache under
`.stability-gateway/cache`, no key needed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Mode = Literal["online", "offline", "replay"]
CALLER_NAME = re.compile(r"[a-z0-9_-]{1,64}")
MODES: tuple[str, ...] = ("online", "offline", "replay")


class ConfigError(ValueError):
    """A setting is missing, misspelt or out of range; raised before the server starts."""


# The v1 engines Stability documents (its engines list, and the upscale route's engine ids):
# offline and replay modes answer 404 for any other engine, as Stability would, and list
# these at /v1/engines/list. This is the one list; `[gateway] engines` replaces it.
V1_ENGINES: tuple[str, ...] = (
    "stable-diffusion-xl-1024-v1-0",
    "stable-diffusion-v1-6",
    "esrgan-v1-x2plus",
    "stable-diffusion-x4-latent-upscaler",
)


@dataclass(frozen=True)
class GatewaySettings:
    mode: str = ""
    upstream_url: str = "https://api.stability.ai"
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 10 * 1024 * 1024
    log_level: str = "info"
    log_format: str = "text"
    require_caller_token: bool = False
    workers: int = 1
    daily_credit_budget: float = 0
    engines: tuple[str, ...] = V1_ENGINES
    # What one connection may cost the server (gateway/cli/server_limits.py).
    max_connections: int = 1000
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_seconds: float = 10
    body_timeout_seconds: float = 30


@dataclass(frozen=True)
class CacheSettings:
    dir: str = ".stability-gateway/cache"
    size_limit_bytes: int = 10 * 1024**3
    ttl_seconds: float = 0
    random_seed_policy: str = "cache"
    variants: int = 4
    allow_cached_default: bool = False
    memory_tier_bytes: int = 64 * 1024 * 1024
    max_ttl_seconds: float = 30 * 24 * 3600
    # "" (disk without Redis, redis with it) | disk | redis | s3://bucket/prefix
    blob_store: str = ""
    s3_endpoint_url: str = ""


@dataclass(frozen=True)
class RateLimitSettings:
    limit: int = 150
    period_seconds: float = 60
    max_wait_seconds: float = 90
    margin_seconds: float = 0.1
    cooldown_seconds: float = 60
    backend: str = "disk"


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 3
    backoff_initial_seconds: float = 1
    backoff_max_seconds: float = 30
    jitter_seconds: float = 1
    retry_read_timeouts: bool = False


@dataclass(frozen=True)
class TimeoutSettings:
    connect_seconds: float = 10
    read_seconds: float = 60
    deadline_seconds: float = 120
    lease_seconds: float = 5


@dataclass(frozen=True)
class CallerSettings:
    """A named caller (`[callers.NAME]`): identified by the SHA-256 of its token."""

    token_sha256: str = ""
    priority: str = "interactive"
    requests_per_minute: int = 0
    daily_credit_budget: float = 0
    cache_scope: str = "shared"


@dataclass(frozen=True)
class AdminSettings:
    token: str = ""


@dataclass(frozen=True)
class RedisSettings:
    """The shared backend of several replicas (cache.redis). The URL may carry a
    password, so neither it nor the password is ever part of a repr."""

    url: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    prefix: str = "stability-gateway:"
    # How a replica's memory tier knows a held entry is still the shared one: "invalidation"
    # trusts it until a pub/sub message says not (no round trip per hit: measured in
    # bench/README.md), "version" asks Redis on every hit.
    hit_check: str = "invalidation"


def _default_prices() -> dict[str, float]:
    """Credits per image (1 credit = $0.01), by route template, or `route:engine` (v1
    engines, sd3 models) where they differ. Stability's published prices
    (platform.stability.ai/pricing, as of June 2026); config.toml lists the same."""
    return {
        "v1": 2.0,  # any v1 route and engine (SDXL 1.0: the seeds' $0.02 an image)
        "v2beta/stable-image/generate/core": 3.0,
        "v2beta/stable-image/generate/ultra": 8.0,
        "v2beta/stable-image/generate/sd3": 6.5,  # SD3.5 Large, the route's default model
        "v2beta/stable-image/generate/sd3:sd3.5-large": 6.5,
        "v2beta/stable-image/generate/sd3:sd3.5-large-turbo": 4.0,
        "v2beta/stable-image/generate/sd3:sd3.5-medium": 3.5,
        "v2beta/stable-image/upscale/fast": 2.0,
        "v2beta/stable-image/upscale/conservative": 40.0,
        "v2beta/stable-image/upscale/creative": 60.0,
        "v2beta/stable-image/edit": 5.0,  # every edit route
        "v2beta/stable-image/control": 5.0,  # every control route
    }


def _default_parameters() -> dict[str, dict[str, Any]]:
    return {
        "text_to_image": {
            "cfg_scale": 7,
            "steps": 30,
            "samples": 1,
            "seed": 0,
            "width": 512,
            "height": 512,
        },
        "text_to_image_sdxl": {"width": 1024, "height": 1024},
    }


@dataclass(frozen=True)
class Settings:
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    timeouts: TimeoutSettings = field(default_factory=TimeoutSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    defaults: dict[str, dict[str, Any]] = field(default_factory=_default_parameters)
    prices: dict[str, float] = field(default_factory=_default_prices)
    callers: dict[str, CallerSettings] = field(default_factory=dict)
    # The upstream key is read from the environment only, never from a file, and never
    # printed: repr=False keeps it out of any log line that formats the settings.
    api_key: str = field(default="", repr=False)

    @property
    def mode(self) -> str:
        """The mode in force: the configured one, else online exactly when a key is set."""
        if self.gateway.mode:
            return self.gateway.mode
        return "online" if self.api_key else "offline"

    def replace(self, **sections: Any) -> Settings:
        """A copy with some sections' fields changed: `s.replace(cache={"dir": "x"})`."""
        changes: dict[str, Any] = {}
        for name, values in sections.items():
            current = getattr(self, name)
            if dataclasses.is_dataclass(current) and not isinstance(current, type):
                changes[name] = dataclasses.replace(current, **values)
            else:
                changes[name] = values
        return dataclasses.replace(self, **changes)


# Environment variable -> (section, field, type).
ENV_OVERRIDES: dict[str, tuple[str, str, type]] = {
    "STABILITY_GATEWAY_UPSTREAM_URL": ("gateway", "upstream_url", str),
    "STABILITY_GATEWAY_MODE": ("gateway", "mode", str),
    "STABILITY_GATEWAY_CACHE_DIR": ("cache", "dir", str),
    "STABILITY_GATEWAY_ADMIN_TOKEN": ("admin", "token", str),
    "STABILITY_GATEWAY_RATE_LIMIT": ("rate_limit", "limit", int),
    "STABILITY_GATEWAY_RATE_PERIOD": ("rate_limit", "period_seconds", float),
    "STABILITY_GATEWAY_RATE_BACKEND": ("rate_limit", "backend", str),
    "STABILITY_GATEWAY_RATE_MAX_WAIT": ("rate_limit", "max_wait_seconds", float),
    "STABILITY_GATEWAY_RATE_MARGIN": ("rate_limit", "margin_seconds", float),
    "STABILITY_GATEWAY_COOLDOWN": ("rate_limit", "cooldown_seconds", float),
    "STABILITY_GATEWAY_RETRY_ATTEMPTS": ("retry", "attempts", int),
    "STABILITY_GATEWAY_BACKOFF_INITIAL": ("retry", "backoff_initial_seconds", float),
    "STABILITY_GATEWAY_BACKOFF_MAX": ("retry", "backoff_max_seconds", float),
    "STABILITY_GATEWAY_BACKOFF_JITTER": ("retry", "jitter_seconds", float),
    "STABILITY_GATEWAY_CONNECT_TIMEOUT": ("timeouts", "connect_seconds", float),
    "STABILITY_GATEWAY_READ_TIMEOUT": ("timeouts", "read_seconds", float),
    "STABILITY_GATEWAY_DEADLINE": ("timeouts", "deadline_seconds", float),
    "STABILITY_GATEWAY_TTL": ("cache", "ttl_seconds", float),
    "STABILITY_GATEWAY_RANDOM_SEED_POLICY": ("cache", "random_seed_policy", str),
    "STABILITY_GATEWAY_VARIANTS": ("cache", "variants", int),
    "STABILITY_GATEWAY_MAX_TTL": ("cache", "max_ttl_seconds", float),
    "STABILITY_GATEWAY_REQUIRE_CALLER_TOKEN": ("gateway", "require_caller_token", bool),
    "STABILITY_GATEWAY_ALLOW_CACHED": ("cache", "allow_cached_default", bool),
    "STABILITY_GATEWAY_MEMORY_TIER_BYTES": ("cache", "memory_tier_bytes", int),
    "STABILITY_GATEWAY_LOG_LEVEL": ("gateway", "log_level", str),
    "STABILITY_GATEWAY_HOST": ("gateway", "host", str),
    "STABILITY_GATEWAY_LOG_FORMAT": ("gateway", "log_format", str),
    "STABILITY_GATEWAY_DAILY_CREDIT_BUDGET": ("gateway", "daily_credit_budget", float),
    "STABILITY_GATEWAY_PORT": ("gateway", "port", int),
    "STABILITY_GATEWAY_WORKERS": ("gateway", "workers", int),
    "STABILITY_GATEWAY_RETRY_READ_TIMEOUTS": ("retry", "retry_read_timeouts", bool),
    "STABILITY_GATEWAY_LEASE_SECONDS": ("timeouts", "lease_seconds", float),
    "STABILITY_GATEWAY_ENGINES": ("gateway", "engines", tuple),
    "STABILITY_GATEWAY_MAX_CONNECTIONS": ("gateway", "max_connections", int),
    "STABILITY_GATEWAY_MAX_HEADER_BYTES": ("gateway", "max_header_bytes", int),
    "STABILITY_GATEWAY_MAX_HEADERS": ("gateway", "max_headers", int),
    "STABILITY_GATEWAY_HEADER_TIMEOUT": ("gateway", "header_timeout_seconds", float),
    "STABILITY_GATEWAY_BODY_TIMEOUT": ("gateway", "body_timeout_seconds", float),
    "STABILITY_GATEWAY_REDIS_URL": ("redis", "url", str),
    "STABILITY_GATEWAY_REDIS_PASSWORD": ("redis", "password", str),
    "STABILITY_GATEWAY_REDIS_PREFIX": ("redis", "prefix", str),
    "STABILITY_GATEWAY_REDIS_HIT_CHECK": ("redis", "hit_check", str),
    "STABILITY_GATEWAY_BLOB_STORE": ("cache", "blob_store", str),
    "STABILITY_GATEWAY_CACHE_SIZE_LIMIT": ("cache", "size_limit_bytes", int),
    "STABILITY_GATEWAY_S3_ENDPOINT_URL": ("cache", "s3_endpoint_url", str),
}

_SECTIONS = ("gateway", "cache", "rate_limit", "retry", "timeouts", "admin", "redis")


def _coerce(value: Any, kind: type, where: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind is tuple:  # a TOML array of strings, or a comma-separated environment variable
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(item.strip() for item in items if item.strip())
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None


def _section_from(cls: type, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"[{where}]: unknown setting(s) {', '.join(unknown)}")
    base = cls()
    kwargs = {
        name: _coerce(v, type(getattr(base, name)), f"[{where}] {name}")
        for name, v in values.items()
    }
    return cls(**kwargs)


def settings_from_mapping(data: Mapping[str, Any]) -> Settings:
    """Build settings from a parsed TOML document; unknown sections or keys are errors."""
    # [styles.NAME] belongs to `stability-gateway generate` (gateway.client.styles).
    unknown = sorted(set(data) - {*_SECTIONS, "defaults", "prices", "callers", "styles"})
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}")
    sections = {
        name: _section_from(type(getattr(Settings(), name)), data.get(name, {}), name)
        for name in _SECTIONS
    }
    defaults = _default_parameters()
    for group, values in data.get("defaults", {}).items():
        defaults.setdefault(group, {}).update(values)
    prices = _default_prices()
    for route, credits in data.get("prices", {}).items():
        prices[str(route)] = _coerce(credits, float, f"[prices] {route}")
        if prices[str(route)] < 0:
            raise ConfigError(f"[prices] {route}: credits must be >= 0")
    callers = {
        str(name): _section_from(CallerSettings, values, f"callers.{name}")
        for name, values in data.get("callers", {}).items()
    }
    return Settings(**sections, defaults=defaults, prices=prices, callers=callers)


def apply_environment(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Environment variables win over the file (twelve-factor style)."""
    changes: dict[str, dict[str, Any]] = {}
    for var, (section, name, kind) in ENV_OVERRIDES.items():
        if var in environ:
            changes.setdefault(section, {})[name] = _coerce(environ[var], kind, var)
    settings = settings.replace(**changes)
    if environ.get("STABILITY_API_KEY"):
        settings = dataclasses.replace(settings, api_key=environ["STABILITY_API_KEY"])
    return settings


def validate(settings: Settings) -> Settings:
    """Reject settings the gateway cannot honour, with a message naming the setting."""
    if settings.mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {settings.mode!r}")
    if settings.cache.random_seed_policy not in ("cache", "refresh", "variants"):
        raise ConfigError("[cache] random_seed_policy must be 'cache', 'refresh' or 'variants'")
    if not 1 <= settings.cache.variants <= 64:
        raise ConfigError("[cache] variants must be between 1 and 64")
    if settings.cache.max_ttl_seconds <= 0:
        raise ConfigError("[cache] max_ttl_seconds must be > 0")
    for name, caller in settings.callers.items():
        where = f"[callers.{name}]"
        if not CALLER_NAME.fullmatch(name):
            raise ConfigError(f"{where}: a caller's name is 1-64 of a-z, 0-9, _ and -")
        if not re.fullmatch(r"[0-9a-f]{64}", caller.token_sha256):
            raise ConfigError(f"{where} token_sha256: the hex SHA-256 of the caller's token "
                              "(stability-gateway token new NAME prints one)")  # fmt: skip
        if caller.priority not in ("interactive", "batch"):
            raise ConfigError(f"{where} priority must be 'interactive' or 'batch'")
        if caller.cache_scope not in ("shared", "private"):
            raise ConfigError(f"{where} cache_scope must be 'shared' or 'private'")
        if caller.requests_per_minute < 0 or caller.daily_credit_budget < 0:
            raise ConfigError(f"{where}: requests_per_minute and daily_credit_budget are >= 0")
    hashes = [c.token_sha256 for c in settings.callers.values()]
    if len(hashes) != len(set(hashes)):
        raise ConfigError("[callers]: two callers have the same token_sha256")
    if settings.rate_limit.backend not in ("disk", "memory"):
        raise ConfigError("[rate_limit] backend must be 'disk' or 'memory'")
    if settings.rate_limit.limit < 1 or settings.rate_limit.period_seconds <= 0:
        raise ConfigError("[rate_limit] limit must be >= 1 and period_seconds > 0")
    if settings.retry.attempts < 1:
        raise ConfigError("[retry] attempts must be >= 1")
    g = settings.gateway
    if g.workers < 1:
        raise ConfigError("[gateway] workers must be >= 1")
    if g.max_connections < 1 or g.max_headers < 1:
        raise ConfigError("[gateway] max_connections and max_headers must be >= 1")
    if g.max_header_bytes < 1024:
        raise ConfigError("[gateway] max_header_bytes must be >= 1024")
    if g.header_timeout_seconds <= 0 or g.body_timeout_seconds <= 0:
        raise ConfigError("[gateway] header_timeout_seconds and body_timeout_seconds must be > 0")
    if settings.gateway.log_format not in ("text", "json"):
        raise ConfigError("[gateway] log_format must be 'text' or 'json'")
    if settings.gateway.daily_credit_budget < 0:
        raise ConfigError("[gateway] daily_credit_budget must be >= 0 (0: no budget)")
    if settings.timeouts.lease_seconds <= 0:
        raise ConfigError("[timeouts] lease_seconds must be > 0")
    _validate_shared(settings)
    return settings


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _validate_shared(settings: Settings) -> None:
    """The Redis URL, the blob store, and how they combine."""
    r, blobs = settings.redis, settings.cache.blob_store
    if r.url and not r.url.startswith(REDIS_SCHEMES):
        raise ConfigError(
            "STABILITY_GATEWAY_REDIS_URL ([redis] url) must start with redis://, rediss:// "
            "or unix://"
        )
    if not r.prefix:
        raise ConfigError("[redis] prefix must not be empty (STABILITY_GATEWAY_REDIS_PREFIX)")
    if r.url and settings.rate_limit.backend == "memory":
        raise ConfigError(
            "[rate_limit] backend 'memory' is per process: with STABILITY_GATEWAY_REDIS_URL "
            "every replica would send the whole limit; use 'disk' (the limit is then in Redis)"
        )
    if r.hit_check not in ("version", "invalidation"):
        raise ConfigError("[redis] hit_check must be 'version' or 'invalidation'")
    if blobs.startswith("s3://"):
        if not blobs[5:].split("/", 1)[0]:
            raise ConfigError(
                "STABILITY_GATEWAY_BLOB_STORE: s3:// needs a bucket: s3://bucket/prefix"
            )
    elif blobs not in ("", "disk", "redis"):
        raise ConfigError(
            "STABILITY_GATEWAY_BLOB_STORE ([cache] blob_store) must be disk, redis or "
            f"s3://bucket/prefix, got {blobs!r}"
        )
    if blobs and blobs != "disk" and not r.url:
        raise ConfigError(
            f"STABILITY_GATEWAY_BLOB_STORE={blobs} needs STABILITY_GATEWAY_REDIS_URL: without "
            "Redis the cache folder's index keeps its images beside it (blob_store = disk)"
        )


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Embedded defaults <- TOML file (explicit path, $STABILITY_GATEWAY_CONFIG, or ./config.toml
    when present) <- environment."""
    environ = os.environ if environ is None else environ
    chosen = path or environ.get("STABILITY_GATEWAY_CONFIG")
    if chosen is None and Path("config.toml").is_file():
        chosen = "config.toml"
    data: dict[str, Any] = {}
    if chosen:
        try:
            with open(chosen, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {chosen}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{chosen}: {exc}") from None
    return validate(apply_environment(settings_from_mapping(data), environ))
