"""The redaction filter: the last line of defence for secrets in log records."""

from __future__ import annotations

import logging

from gateway.logs import RedactSecrets, configure_logging


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("t", logging.WARNING, __file__, 1, msg, args, None)


def test_known_secrets_and_bearer_tokens_are_replaced() -> None:
    redact = RedactSecrets(["sk-SECRET-123", ""])
    r = record("upstream said %s to key %s", "'Authorization': 'Bearer abc.def'", "sk-SECRET-123")
    assert redact.filter(r)
    text = r.getMessage()
    assert "sk-SECRET-123" not in text and "abc.def" not in text
    assert text == "upstream said 'Authorization': 'Bearer ***' to key ***"


def test_clean_records_are_left_alone() -> None:
    r = record("retrying in %.1f s", 2.0)
    RedactSecrets(["sk-x"]).filter(r)
    assert r.args == (2.0,) and r.getMessage() == "retrying in 2.0 s"


def test_configure_logging_redacts_and_is_idempotent(capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging("info", ["sk-SECRET-999"])
    configure_logging("info", ["sk-SECRET-999"])  # a second worker's app: still one handler
    logging.getLogger("gateway.test").warning("key is sk-SECRET-999")
    err = capsys.readouterr().err
    assert err.count("key is ***") == 1 and "sk-SECRET-999" not in err
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_stability_gateway", False)]:
        root.removeHandler(handler)
