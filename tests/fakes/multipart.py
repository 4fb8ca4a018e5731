"""Multipart bodies built by hand, so a test chooses the part order and the boundary (httpx
picks a random boundary and puts fields before files)."""

from __future__ import annotations

from collections.abc import Sequence

# A part's value: a text field, or (filename, bytes, content type) for a file.
Part = tuple[str, str | tuple[str, bytes, str]]


def encode_multipart(parts: Sequence[Part], boundary: str) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a multipart/form-data request carrying `parts` in order."""
    out = b""
    for name, value in parts:
        out += f"--{boundary}\r\n".encode()
        if isinstance(value, tuple):
            filename, data, content_type = value
            out += (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode() + data
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode()
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, {"content-type": f"multipart/form-data; boundary={boundary}"}
