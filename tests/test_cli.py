"""The `stability-gateway` command, run for real, for people (a terminal) and for scripts
(a pipe), on cache folders filled by a real gateway or by the store directly."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cache.local import LocalEntryStore
from cache.model import Artifact
from tests.cli_support import in_terminal, run_cli
from tests.fakes import GatewayProcess, gateway_env, png_bytes

PATH = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
PROMPTS = ("alpha", "beta\twith a tab\nand a newline", "two samples")


@dataclass
class Filled:
    folder: Path
    keys: dict[str, str]  # prompt -> key


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    """A cache folder written by a real (offline) gateway: three entries, one of them with
    two images, and one hit. The gateway is stopped before the tests read it."""
    tmp = tmp_path_factory.mktemp("cli")
    keys = {}
    with GatewayProcess(gateway_env(tmp / "cache", mode="offline"), log_dir=tmp) as gateway:
        for prompt in PROMPTS:
            samples = 2 if prompt == "two samples" else 1
            body = {"text_prompts": [{"text": prompt}, {"text": "ugly", "weight": -1}],
                    "samples": samples}  # fmt: skip
            response = httpx.post(gateway.url + PATH, json=body, timeout=60)
            assert response.status_code == 200
            keys[prompt] = response.headers["x-cache-key"]
        again = {"text_prompts": [{"text": "alpha"}, {"text": "ugly", "weight": -1}]}
        assert httpx.post(gateway.url + PATH, json=again).headers["x-cache"] == "HIT"
    yield Filled(tmp / "cache", keys)


@pytest.fixture
def folder(filled: Filled, tmp_path: Path) -> Path:
    """A copy of the filled folder this test may change."""
    return Path(shutil.copytree(filled.folder, tmp_path / "cache"))


def cache(folder: Path, *args: str, **kwargs: object) -> tuple[int, str, str]:
    done = run_cli("cache", "--cache-dir", str(folder), *args, cwd=folder.parent, **kwargs)  # type: ignore[arg-type]
    return done.returncode, done.stdout.decode(), done.stderr.decode()


# -- 16: ls ------------------------------------------------------------------------------------


def test_ls_in_a_pipe_prints_one_tab_separated_line_per_entry_full_key_first(
    filled: Filled,
) -> None:
    code, out, _ = cache(filled.folder, "ls")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3  # no header, no title: `| wc -l` counts entries
    rows = [line.split("\t") for line in lines]
    assert all(len(row) == 7 for row in rows)
    by_key = {row[0]: row for row in rows}
    assert set(by_key) == set(filled.keys.values())
    alpha = by_key[filled.keys["alpha"]]
    assert alpha[1:5] == ["stable-diffusion-xl-1024-v1-0", "1024x1024", alpha[3], "1"]
    assert int(alpha[3]) > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", alpha[5])
    assert alpha[6] == "alpha"  # the first positive prompt
    # A tab or newline in a prompt cannot break the format.
    assert by_key[filled.keys[PROMPTS[1]]][6] == "beta with a tab and a newline"


def test_ls_json_lists_entries_for_scripts(filled: Filled) -> None:
    code, out, _ = cache(filled.folder, "ls", "--json", "--limit", "2")
    listing = json.loads(out)
    assert code == 0
    assert (listing["total"], listing["limit"], listing["offset"]) == (3, 2, 0)
    assert listing["dir"] == str(filled.folder.resolve())
    assert len(listing["entries"]) == 2
    assert all(len(entry["key"]) == 64 for entry in listing["entries"])


def test_ls_on_a_terminal_is_a_table_that_fits_80_columns(filled: Filled) -> None:
    code, shown = in_terminal("cache", "--cache-dir", str(filled.folder), "ls",
                              cwd=filled.folder.parent, columns=80)  # fmt: skip
    assert code == 0
    assert "3 entries in" in shown and "prompt" in shown
    for key in filled.keys.values():
        assert key[:16] in shown and key not in shown
    assert all(len(line) <= 80 for line in shown.splitlines())


def test_show_and_rm_take_a_unique_prefix_of_at_least_8_hex_digits(folder: Path) -> None:
    _, out, _ = cache(folder, "ls")
    key = out.splitlines()[0].split("\t")[0]
    code, out, _ = cache(folder, "show", key[:8].upper())
    assert code == 0 and json.loads(out)["key"] == key
    code, _, err = cache(folder, "show", key[:7])
    assert code == 2 and "at least 8 hex digits" in err and len(err.splitlines()) == 1
    code, _, err = cache(folder, "show", "zzzzzzzzzz")
    assert code == 2 and "not a key" in err
    code, out, _ = cache(folder, "rm", key[:10])
    assert code == 0 and out.strip() == f"deleted {key}"
    code, _, err = cache(folder, "show", key)
    assert code == 1 and "no entry" in err


def test_an_ambiguous_prefix_is_refused_saying_how_many_match(tmp_path: Path) -> None:
    async def fill() -> None:
        store = LocalEntryStore(tmp_path / "cache")
        for digit in "012":
            key = "deadbeef" + digit * 56
            meta = {"engine": "e", "width": 8, "height": 8, "prompts": [{"text": digit}]}
            await store.put(key, [Artifact(png_bytes(8, 8), seed=1)], meta)
        await store.close()

    asyncio.run(fill())
    for action in ("show", "rm"):
        code, _, err = cache(tmp_path / "cache", action, "deadbeef")
        assert code == 1
        assert "3 entries" in err and "deadbeef" in err and len(err.splitlines()) == 1
    code, out, _ = cache(tmp_path / "cache", "show", "deadbeef1")
    assert code == 0 and json.loads(out)["key"] == "deadbeef" + "1" * 56


# -- 17: stats ---------------------------------------------------------------------------------


def test_stats_on_a_terminal_reads_like_a_summary(filled: Filled) -> None:
    code, shown = in_terminal("cache", "--cache-dir", str(filled.folder), "stats",
                              cwd=filled.folder.parent)  # fmt: skip
    assert code == 0
    assert "{" not in shown
    assert re.search(r"entries\s+3 \(\d+\.\d MiB of images", shown)
    assert "1 hits, 0 joined an identical call, 3 misses: hit ratio 25.0 %" in shown
    assert re.search(r"upstream calls\s+0", shown)


def test_stats_json_and_in_a_pipe_are_the_raw_numbers(filled: Filled) -> None:
    for args in (("stats", "--json"), ("stats",)):  # a pipe keeps printing JSON, as before
        code, out, _ = cache(filled.folder, *args)
        numbers = json.loads(out)
        assert code == 0
        assert (numbers["entries"], numbers["hits"], numbers["misses"]) == (3, 1, 3)
        assert numbers["hit_ratio"] == 0.25 and numbers["bytes"] > 0


# -- 18: show --image --------------------------------------------------------------------------


def test_show_image_writes_the_image_and_index_chooses_among_samples(
    filled: Filled, tmp_path: Path
) -> None:
    key = filled.keys["two samples"]
    _, out, _ = cache(filled.folder, "show", key)
    shas = [a["sha256"] for a in json.loads(out)["artifacts"]]
    written = []
    for index in (0, 1):
        target = tmp_path / f"image{index}.png"
        code, out, _ = cache(filled.folder, "show", key[:12], "--image", str(target),
                             "--index", str(index))  # fmt: skip
        assert code == 0 and str(target) in out and "image/png" in out
        written.append(target.read_bytes())
    assert [hashlib.sha256(data).hexdigest() for data in written] == shas
    assert Image.open(io.BytesIO(written[0])).size == (1024, 1024)
    code, _, err = cache(filled.folder, "show", key, "--image", str(tmp_path / "x"),
                         "--index", "2")  # fmt: skip
    assert code == 2 and "0 to 1" in err and not (tmp_path / "x").exists()
    to_stdout = run_cli("cache", "--cache-dir", str(filled.folder), "show", key, "--image", "-",
                        cwd=tmp_path)  # fmt: skip
    assert to_stdout.returncode == 0 and to_stdout.stdout == written[0]


# -- 19: purge ---------------------------------------------------------------------------------


def test_purge_without_a_terminal_needs_yes(folder: Path) -> None:
    code, out, err = cache(folder, "purge", input=b"y\n")
    assert code == 2 and out == ""
    assert "--yes" in err and "3 entries" in err and len(err.splitlines()) == 1
    assert json.loads(cache(folder, "stats")[1])["entries"] == 3
    code, out, _ = cache(folder, "purge", "--yes")
    assert code == 0 and "purged 3 entries" in out
    assert json.loads(cache(folder, "stats")[1])["entries"] == 0


def test_purge_on_a_terminal_asks_first(folder: Path) -> None:
    args = ("cache", "--cache-dir", str(folder), "purge")
    code, shown = in_terminal(*args, cwd=folder.parent, typed="n\n")
    assert code == 1 and "Delete all 3 entries" in shown and "nothing deleted" in shown
    assert json.loads(cache(folder, "stats")[1])["entries"] == 3
    code, shown = in_terminal(*args, cwd=folder.parent, typed="y\n")
    assert code == 0 and "purged 3 entries" in shown
    assert json.loads(cache(folder, "stats")[1])["entries"] == 0


# -- 20: --cache-dir ---------------------------------------------------------------------------


def test_cache_commands_refuse_a_missing_folder_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-cache"
    for action in ("ls", "stats", "purge"):
        code, out, err = cache(missing, action)
        assert code == 2 and out == ""
        assert len(err.splitlines()) == 1
        assert str(missing) in err and "STABILITY_GATEWAY_CACHE_DIR" in err
        assert "--cache-dir" in err
    assert not missing.exists()
    done = run_cli("cache", "ls", cwd=tmp_path)  # the default folder, relative to here
    assert done.returncode == 2 and b".stability-gateway" in done.stderr
    assert not (tmp_path / ".stability-gateway").exists()


def test_cache_dir_is_taken_before_or_after_the_action(filled: Filled, tmp_path: Path) -> None:
    folder = str(filled.folder)
    for args in (
        ("cache", "--cache-dir", folder, "stats"),
        ("cache", "stats", "--cache-dir", folder),
    ):
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 0 and json.loads(done.stdout)["entries"] == 3


def test_serve_takes_cache_dir(tmp_path: Path) -> None:
    folder = tmp_path / "chosen"
    env = {"STABILITY_GATEWAY_MODE": "offline"}
    with GatewayProcess(env, extra_args=["--cache-dir", str(folder)], cwd=tmp_path,
                        log_dir=tmp_path) as gateway:  # fmt: skip
        body = {"text_prompts": [{"text": "where"}]}
        key = httpx.post(gateway.url + PATH, json=body, timeout=60).headers["x-cache-key"]
    _, out, _ = cache(folder, "ls")
    assert out.split("\t")[0] == key
    assert not (tmp_path / ".stability-gateway").exists()


# -- 21: --version -----------------------------------------------------------------------------


def test_version_comes_from_the_installed_package(tmp_path: Path) -> None:
    done = run_cli("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert (
        done.stdout.decode().strip() == f"stability-gateway {metadata.version('stability-gateway')}"
    )
