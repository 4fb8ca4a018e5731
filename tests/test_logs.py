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


def test_httpxs_line_per_upstream_call_shows_only_at_debug(capsys) -> None:  # type: ignore[no-untyped-def]
    try:
        for level, shown in (("info", False), ("warning", False), ("debug", True)):
            configure_logging(level, [])
            logging.getLogger("httpx").info('HTTP Request: POST http://u/ "HTTP/1.1 200 OK"')
            logging.getLogger("httpx").warning("a warning from httpx")
            err = capsys.readouterr().err
            assert ("HTTP Request" in err) is shown, level
            assert "a warning from httpx" in err
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_stability_gateway", False)]:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.NOTSET)


def test_access_fields_are_redacted_when_only_a_field_holds_the_secret() -> None:
    # The filter looks at the message and every access field together first, and only
    # redacts when that look finds something: a secret in a field alone must still go.
    redact = RedactSecrets(["sk-SECRET-123"])
    r = record("POST %s", "/v1/x")
    r.__dict__.update(path="/v1/x?key=sk-SECRET-123", reason="Bearer tok.en", route="v1/x")
    assert redact.filter(r)
    assert r.__dict__["path"] == "/v1/x?key=***"
    assert r.__dict__["reason"] == "Bearer ***"
    assert r.__dict__["route"] == "v1/x" and r.getMessage() == "POST /v1/x"


def test_a_clean_access_record_is_left_as_it_was() -> None:
    redact = RedactSecrets(["sk-SECRET-123"])
    r = record("POST %s %d", "/v1/x", 200)
    fields = {"path": "/v1/x", "cache": "HIT", "key": "ab" * 32, "caller": "dev"}
    r.__dict__.update(fields)
    assert redact.filter(r)
    assert r.args == ("/v1/x", 200)
    assert {name: r.__dict__[name] for name in fields} == fields


def test_a_bearer_split_across_fields_is_not_missed_nor_invented() -> None:
    # Joined for the first look, "...bearer" at the end of one field and the next field
    # read as a token: that look says dirty, and each field is then redacted on its own.
    redact = RedactSecrets([])
    r = record("saw a bearer")
    r.__dict__.update(path="/v1/bearer", reason="token-like")
    assert redact.filter(r)
    assert r.getMessage() == "saw a bearer"
    assert r.__dict__["path"] == "/v1/bearer" and r.__dict__["reason"] == "token-like"
