"""A non-editable install (the Docker image's `pip install .`) must ship every subpackage."""

from __future__ import annotations

import fnmatch
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
