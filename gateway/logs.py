"""Logging set-up with a last line of defence for secrets.

The code never formats a key into a message; this filter makes sure that stays true for
messages it does not control (library errors that echo headers, say): every known secret
and anything after `Bearer ` is replaced with `***` before a record is written.
"""

from __future__ import annotations

import logging
import re

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",}]+")


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return _BEARER.sub(r"\1***", text)

    def dirty(self, text: str) -> bool:
        """Whether `redact` would change anything: one search, where redacting is one
        replace per secret and a regex substitution."""
        return any(secret in text for secret in self.secrets) or _BEARER.search(text) is not None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # Fields given as `extra` (the access line's) go out as JSON keys: redact them too.
        fields = record.__dict__
        texts = [message, *(v for name in ACCESS_FIELDS if isinstance(v := fields.get(name), str))]
        # Nearly every record is clean: one look at all of its text together (the access
        # line, on every request, has a dozen fields), and only a dirty one is redacted.
        if not self.dirty("\n".join(texts)):
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for name in ACCESS_FIELDS:
            value = fields.get(name)
            if isinstance(value, str):
                fields[name] = self.redact(value)
        return True


# The access line's fields (gateway.http.access), written as keys in JSON lines.
ACCESS_FIELDS = (
    "pid", "method", "path", "route", "status", "cache", "key", "duration_ms",
    "upstream_status", "attempts", "credits", "caller", "error_name", "error_id", "reason",
)  # fmt: skip


def json_formatter() -> logging.Formatter:
    """One JSON object per line (python-json-logger): time, level, logger, message, and the
    access line's fields as keys of their own."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "{asctime}{levelname}{name}{process}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                       "process": "pid"},
    )  # fmt: skip


def configure_logging(level: str, secrets: list[str], *, json_lines: bool = False) -> None:
    """One handler on the root logger, every record through the redaction filter.

    Idempotent: called again (each uvicorn worker builds its own app) it replaces its
    handler instead of adding a second.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_stability_gateway", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler._stability_gateway = True  # type: ignore[attr-defined]
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(json_formatter() if json_lines else text)
    handler.addFilter(RedactSecrets(secrets))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every upstream call at INFO ("HTTP Request: POST ... 200 OK"), which the
    # access line (upstream status, attempts) and the retry WARNINGs already say; below
    # DEBUG it is noise, and a formatted line on every miss. At DEBUG it is kept.
    quiet = root.getEffectiveLevel() > logging.DEBUG
    logging.getLogger("httpx").setLevel(logging.WARNING if quiet else logging.NOTSET)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        for h in logging.getLogger(name).handlers:
            h.addFilter(RedactSecrets(secrets))
            if json_lines:
                h.setFormatter(json_formatter())
