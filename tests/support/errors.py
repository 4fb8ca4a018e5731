"""Checks that an answer is an error in Stability's own shape."""

from __future__ import annotations

from typing import Any

import httpx


def stability_error(response: httpx.Response, status: int, *, v2: bool = False) -> str:
    """The error's name, after checking status and shape (v1 `{"id","name","message"}`,
    v2beta `{"id","name","errors"}`)."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ({"id", "name", "errors"} if v2 else {"id", "name", "message"}), body
    return str(body["name"])
