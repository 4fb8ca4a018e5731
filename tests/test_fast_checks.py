"""The fast paths of the miss: PNG pixel data checked without Pillow (gateway.png), and
Stability's JSON answers read without parsing their base64 (gateway.routes.answers). Each
must refuse exactly what the slow way refuses, and agree with it on what it accepts."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import pytest
from PIL import Image

from gateway import png
from gateway.errors import UpstreamError
from gateway.images import check_image
from gateway.png import PIECE, BadPng, check_pixels
from gateway.routes import answers
from tests.fakes.images import png_bytes
from tests.fakes.stability import undecodable_png


def encode(mode: str, size: tuple[int, int] = (37, 21), **save: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 90).save(out, format="PNG", **save)
    return out.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_from_raw(width: int, height: int, raw: bytes) -> bytes:
    """An RGB PNG whose pixel data inflates to `raw` (filter bytes and rows), CRCs right."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))  # fmt: skip


@pytest.fixture(params=["one buffer", "in pieces"])
def inflate_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Rows up to png.WHOLE_BYTES are inflated by libdeflate into one buffer, larger ones
    in pieces: every check below must hold on both paths, so each test runs on each."""
    if request.param == "in pieces":
        monkeypatch.setattr(png, "WHOLE_BYTES", 0)
    return str(request.param)


@pytest.mark.usefixtures("inflate_path")
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_sound_pngs_pass_and_agree_with_pillow(mode: str) -> None:
    data = encode(mode)
    assert check_pixels(data) == (37, 21) == Image.open(io.BytesIO(data)).size


@pytest.mark.usefixtures("inflate_path")
def test_the_big_noisy_image_passes() -> None:
    assert check_pixels(png_bytes(1344, 768, seed=4, noisy=True)) == (1344, 768)


@pytest.mark.usefixtures("inflate_path")
@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda d: undecodable_png(d), "does not inflate"),
        (lambda d: d[: len(d) // 2], "runs past the end"),
        (lambda d: d[:40] + bytes([d[40] ^ 0xFF]) + d[41:], "CRC"),
        (lambda d: d[:8] + b"garbage", "missing"),
    ],
)
def test_damaged_pngs_are_refused(damage, why: str) -> None:  # type: ignore[no-untyped-def]
    data = damage(encode("RGB"))
    with pytest.raises(BadPng, match=why):
        check_pixels(data)
    with pytest.raises(UpstreamError):
        check_image(data, expected_size=None, full=True)


@pytest.mark.usefixtures("inflate_path")
def test_pixel_data_of_the_wrong_length_or_with_a_bad_filter_is_refused() -> None:
    width, height = 4, 3
    row = b"\x00" + b"\x10" * (3 * width)
    assert check_pixels(png_from_raw(width, height, row * height)) == (4, 3)
    with pytest.raises(BadPng, match="holds"):
        check_pixels(png_from_raw(width, height, row * (height - 1)))
    with pytest.raises(BadPng, match="filter"):
        check_pixels(png_from_raw(width, height, row + b"\x07" + row[1:] + row))
    with pytest.raises(OSError):  # Pillow refuses the bad filter too
        Image.open(io.BytesIO(png_from_raw(width, height, row + b"\x07" + row[1:] + row))).load()
    # Pillow quietly accepts pixel data a row short (a partial image); this does not.
    Image.open(io.BytesIO(png_from_raw(width, height, row * (height - 1)))).load()


@pytest.mark.usefixtures("inflate_path")
def test_pixel_data_far_larger_than_its_chunk_is_checked_row_by_row() -> None:
    """A solid image's one small IDAT inflates to megabytes; in pieces, their boundaries
    fall mid-row: on either path every row's filter byte is still seen, in any piece."""
    width, height = 1344, 768
    row = b"\x00" + b"\x7f" * (3 * width)
    whole = png_from_raw(width, height, row * height)
    assert len(whole) < 20_000 and len(row) * height > 11 * PIECE
    assert check_pixels(whole) == (width, height) == Image.open(io.BytesIO(whole)).size
    assert check_pixels(png_bytes(width, height, seed=2)) == (width, height)
    for bad_row in (1, PIECE // len(row) + 1, height - 1):  # in the first, a middle, the last piece
        raw = row * bad_row + b"\x05" + row[1:] + row * (height - bad_row - 1)
        with pytest.raises(BadPng, match="filter"):
            check_pixels(png_from_raw(width, height, raw))
    with pytest.raises(BadPng, match="holds 3093311 bytes, 3097344 expected"):  # a row short
        check_pixels(png_from_raw(width, height, row * (height - 1)))


@pytest.mark.usefixtures("inflate_path")
def test_a_wrong_adler32_or_a_cut_stream_is_refused() -> None:
    """Rows of the right length whose zlib checksum is wrong (one flipped bit in the
    stream's last four bytes, CRC recomputed), or a stream cut short: both refused."""
    width, height = 64, 8
    raw = (b"\x00" + b"\x21" * (3 * width)) * height
    stream = zlib.compress(raw)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def with_idat(idat: bytes) -> bytes:
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                + chunk(b"IEND", b""))  # fmt: skip

    assert check_pixels(with_idat(stream)) == (width, height)
    with pytest.raises(BadPng, match="does not inflate"):
        check_pixels(with_idat(stream[:-1] + bytes([stream[-1] ^ 1])))
    with pytest.raises(BadPng, match="stops before its end"):
        check_pixels(with_idat(stream[:-6]))


def test_sound_rows_are_inflated_into_one_buffer_up_to_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The noisy 2.6 MB image goes the one-buffer way, never the pieces; rows larger than
    WHOLE_BYTES go the pieces way (bounded memory), and still pass."""
    pieces: list[int] = []
    real = png._check_in_pieces

    def spied(idat, stride, expected):  # type: ignore[no-untyped-def]
        pieces.append(expected)
        real(idat, stride, expected)

    monkeypatch.setattr(png, "_check_in_pieces", spied)
    noisy = png_bytes(1344, 768, seed=4, noisy=True)
    assert check_pixels(noisy) == (1344, 768) and pieces == []
    monkeypatch.setattr(png, "WHOLE_BYTES", 3_000_000)  # below 768 rows of 4033 bytes
    assert check_pixels(noisy) == (1344, 768) and pieces == [768 * 4033]


def test_pixel_data_that_inflates_too_far_is_refused_without_inflating_it_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 MB of rows from a 40 KB chunk, for a 4x3 image: refused at the first piece."""
    bomb = png_from_raw(4, 3, b"\x00" * 40_000_000)
    assert len(bomb) < 60_000
    inflated: list[int] = []
    real = png._inflated

    def counting(inflater, chunks):  # type: ignore[no-untyped-def]
        for piece in real(inflater, chunks):
            inflated.append(len(piece))
            yield piece

    monkeypatch.setattr(png, "_inflated", counting)
    with pytest.raises(BadPng, match="more than the 39 bytes"):
        check_pixels(bomb)
    assert 0 < sum(inflated) <= PIECE


def test_kinds_it_does_not_check_are_left_to_pillow() -> None:
    sixteen = io.BytesIO()
    Image.new("I;16", (9, 9), 3).save(sixteen, format="PNG")
    assert check_pixels(sixteen.getvalue()) is None
    assert check_image(sixteen.getvalue(), expected_size=(9, 9), full=True) == (9, 9)


def v1_body(*images: bytes, spacing: str = "", extra: str = "") -> bytes:
    artifacts = [
        f'{{"base64":{spacing}"{base64.b64encode(i).decode()}", "seed": {n}, '
        f'"finishReason": "SUCCESS"{extra}}}'
        for n, i in enumerate(images, 1)
    ]
    return ('{"artifacts": [' + ", ".join(artifacts) + "]}").encode()


def test_v1_answers_are_read_without_parsing_the_base64() -> None:
    one, two = b"\x89PNG one", b"\x89PNG two!"
    for body in (v1_body(one, two), v1_body(one, two, spacing=" \n ")):
        images = answers.v1_images(body)
        assert [i.data for i in images] == [one, two]
        assert [i.fields["seed"] for i in images] == [1, 2]
        assert images[0].b64 == base64.b64encode(one)


def test_odd_v1_bodies_fall_back_to_the_ordinary_parse() -> None:
    data = bytes(range(256)) * 4  # base64 with "/" in it, which JSON may escape as "\/"
    text = base64.b64encode(data).decode().replace("/", "\\/")
    escaped = json.dumps({"artifacts": [{"base64": "X", "seed": 1}]}).replace('"X"', f'"{text}"')
    assert answers.v1_images(escaped.encode())[0].data == data
    decoy = v1_body(b"img", extra=', "note": "base64"')  # the field's name as a value
    assert answers.v1_images(decoy)[0].data == b"img"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"artifacts": []}',
        b'{"artifacts": [{"base64": "!!!!"}]}',
        b'{"artifacts": [{"base64": "aGVsbG8"}]}',  # bad padding
        b'{"artifacts": [{"seed": 1}]}',
        b'{"image": "aGVsbG8="}',
    ],
)
def test_unusable_v1_answers_are_upstream_errors(body: bytes) -> None:
    with pytest.raises(UpstreamError):
        answers.v1_images(body)


def test_v2_answers() -> None:
    image = answers.v2_image(b'{"image": "aGVsbG8=", "finish_reason": "SUCCESS", "seed": 3}')
    assert (image.data, image.fields["seed"], image.b64) == (b"hello", 3, b"aGVsbG8=")
    with pytest.raises(UpstreamError):
        answers.v2_image(b'{"image": "not base64!"}')
    with pytest.raises(UpstreamError):
        answers.v2_image(b"[1, 2]")
