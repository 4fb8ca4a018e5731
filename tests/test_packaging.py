"""A non-editable install (the Docker image's `pip install .`) must ship every subpackage,
and the gallery's templates and static files."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shipped(name: str, setuptools: dict[str, object]) -> bool:
    """Whether setuptools' configuration in pyproject.toml includes package `name`."""
    if "packages" in setuptools and isinstance(setuptools["packages"], list):
        return name in setuptools["packages"]
    find = setuptools.get("packages", {})
    assert isinstance(find, dict)
    include = find.get("find", {}).get("include", ["*"])
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in include)


def test_every_package_is_in_the_distribution() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = [
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("gateway", "cache")
        for init in (ROOT / top).rglob("__init__.py")
    ]
    assert {"gateway.routes", "gateway.client"} <= set(packages)
    missing = [name for name in packages if not shipped(name, config)]
    assert not missing, f"left out of `pip install .`: {missing}"


def test_package_data_names_every_template_and_static_file() -> None:
    """The gallery's files are not Python: only package-data puts them in the distribution."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["gateway"]
    web = ROOT / "gateway" / "web"
    files = [p for d in ("templates", "static") for p in (web / d).rglob("*") if p.is_file()]
    assert any(p.name == "gallery.html" for p in files) and any(p.suffix == ".css" for p in files)
    unshipped = [
        str(p.relative_to(ROOT))
        for p in files
        if not any(
            fnmatch.fnmatchcase(str(p.relative_to(ROOT / "gateway")), pat) for pat in patterns
        )
    ]
    assert not unshipped, f"left out of `pip install .`: {unshipped}"


def test_a_built_copy_serves_the_gallery_with_its_own_files(tmp_path: Path) -> None:
    """What a non-editable install copies (setuptools' build_py: packages and package-data,
    as in the wheel), run from that copy alone: the page and its stylesheet render."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("gateway", "cache"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    built = tmp_path / "lib"
    subprocess.run(
        [sys.executable, "-W", "ignore", "-c", "import setuptools; setuptools.setup()", "-q",
         "build_py", "--build-lib", str(built)],
        cwd=source, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    web = built / "gateway" / "web"
    assert (web / "templates" / "gallery.html").is_file() and (web / "static").is_dir()
    done = subprocess.run(
        [sys.executable, "-c", SERVE_FROM_COPY, str(built), str(tmp_path / "cache")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    origin, page, css = done.stdout.split()
    assert Path(origin).is_relative_to(built)
    assert (page, css) == ("200", "200")


# Imports the gateway from the built copy (first on sys.path, ahead of the editable
# install's finder), then asks the real app for the gallery page and its stylesheet.
SERVE_FROM_COPY = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
import httpx, gateway
from gateway.app import create_app
from gateway.config import Settings

async def main():
    settings = Settings().replace(gateway={"mode": "offline"}, cache={"dir": sys.argv[2]})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            page = await c.get("/gallery", headers={"Accept": "text/html"})
            css = await c.get("/gallery/static/gallery.css")
    print(gateway.__file__, page.status_code, css.status_code)

asyncio.run(main())
"""
