"""Style profiles: what every prompt of one video shares, so its images look alike.

A profile is the modifiers appended to each description, one negative prompt, and the
generation parameters. `StyleProfile()` is the built-in `cinematic`, the seeds' defaults.
Others come from a TOML file or from a `[styles.NAME]` table of the gateway's config.toml:

    [styles.noir]
    modifiers = ["film noir", "black and white", "dramatic shadows"]
    negative_prompt = ["blurry", "low quality", "color"]   # or one string
    [styles.noir.params]
    cfg_scale = 9
    steps = 40
    style_preset = "cinematic"
    size = "1344x768"      # optional: else the SDXL size nearest the output's aspect
    seed = 1234            # optional: 0 (the default) asks for a random image

Keys left out keep `cinematic`'s values. A fixed profile gives identical requests for
identical descriptions, which is what lets the gateway's cache answer a rerun for free.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway.client.errors import StyleError
from gateway.client.sizes import parse_size
from gateway.client.stability import DEFAULT_ENGINE

CINEMATIC_MODIFIERS = (
    "cinematic lighting",
    "professional photography",
    "4k quality",
    "photorealistic",
)
CINEMATIC_NEGATIVE = "blurry, low quality, watermark, text"


@dataclass(frozen=True)
class StyleParams:
    """Generation parameters; `size` None means the SDXL size nearest the output's aspect."""

    engine: str = DEFAULT_ENGINE
    cfg_scale: float = 8
    steps: int = 40
    style_preset: str | None = None
    size: tuple[int, int] | None = None
    seed: int = 0


@dataclass(frozen=True)
class StyleProfile:
    """Modifiers, negative prompt and parameters; the defaults are `cinematic`.

    `negative_prompt` may be given as a list (joined with ", ") and `params` as a mapping.
    """

    modifiers: Sequence[str] = CINEMATIC_MODIFIERS
    negative_prompt: str | Sequence[str] = CINEMATIC_NEGATIVE
    params: StyleParams | Mapping[str, Any] = field(default_factory=StyleParams)
    name: str = "cinematic"

    def __post_init__(self) -> None:
        # Normalised once here so that every user of a profile sees one spelling.
        if isinstance(self.modifiers, str) or not all(isinstance(m, str) for m in self.modifiers):
            raise StyleError(f"style {self.name!r}: modifiers must be a list of strings")
        object.__setattr__(self, "modifiers", tuple(self.modifiers))
        negative = self.negative_prompt
        if not isinstance(negative, str):
            if not all(isinstance(n, str) for n in negative):
                raise StyleError(f"style {self.name!r}: negative_prompt must be text")
            negative = ", ".join(negative)
        object.__setattr__(self, "negative_prompt", negative)
        if not isinstance(self.params, StyleParams):
            object.__setattr__(self, "params", _params(self.params, self.name))

    @property
    def negative(self) -> str:
        """The negative prompt as one string (what is sent)."""
        assert isinstance(self.negative_prompt, str)
        return self.negative_prompt

    @property
    def parameters(self) -> StyleParams:
        assert isinstance(self.params, StyleParams)
        return self.params

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], name: str = "custom") -> StyleProfile:
        """A profile from a parsed TOML table; unknown keys are errors, not ignored."""
        unknown = sorted(set(data) - {"modifiers", "negative_prompt", "params", "name"})
        if unknown:
            raise StyleError(f"style {name!r}: unknown key(s) {', '.join(unknown)}")
        kwargs: dict[str, Any] = {"name": str(data.get("name", name))}
        for key in ("modifiers", "negative_prompt", "params"):
            if key in data:
                kwargs[key] = data[key]
        if "modifiers" in kwargs and not isinstance(kwargs["modifiers"], list):
            raise StyleError(f"style {name!r}: modifiers must be a list of strings")
        if "params" in kwargs and not isinstance(kwargs["params"], Mapping):
            raise StyleError(f"style {name!r}: params must be a table")
        return cls(**kwargs)

    @classmethod
    def load(
        cls, path_or_name: str | os.PathLike[str], *, config: str | None = None
    ) -> StyleProfile:
        """A profile from a TOML file, or by name: a `[styles.NAME]` table of the config
        file (`config`, else $STABILITY_GATEWAY_CONFIG, else ./config.toml when present),
        else a built-in profile. Raises StyleError naming what is available."""
        text = os.fspath(path_or_name)
        if isinstance(path_or_name, os.PathLike) or text.endswith(".toml") or os.sep in text:
            data = _read_toml(Path(text))
            return cls.from_mapping(data, name=Path(text).stem)
        configured = _config_styles(config)
        if text in configured:
            table = configured[text]
            if not isinstance(table, Mapping):
                raise StyleError(f"[styles.{text}] must be a table")
            return cls.from_mapping(table, name=text)
        if text in BUILTIN_STYLES:
            return BUILTIN_STYLES[text]
        known = sorted({*BUILTIN_STYLES, *configured})
        raise StyleError(f"unknown style {text!r}; known styles: {', '.join(known)}")


BUILTIN_STYLES: dict[str, StyleProfile] = {"cinematic": StyleProfile()}


def _params(values: Mapping[str, Any], name: str) -> StyleParams:
    known = {f.name for f in fields(StyleParams)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise StyleError(f"style {name!r}: unknown param(s) {', '.join(unknown)}")
    checked: dict[str, Any] = dict(values)
    try:
        if "size" in checked:
            size = checked["size"]
            if isinstance(size, str):
                checked["size"] = parse_size(size)
            elif isinstance(size, Sequence) and len(size) == 2:
                checked["size"] = (int(size[0]), int(size[1]))
            else:
                raise ValueError(f"size: expected 'WIDTHxHEIGHT', got {size!r}")
        for key, kind in (("steps", int), ("seed", int), ("cfg_scale", float)):
            if key in checked:
                value = checked[key]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{key}: expected a number, got {value!r}")
                if kind is int and value != int(value):
                    raise ValueError(f"{key}: expected an integer, got {value!r}")
                checked[key] = kind(value)
        for key in ("engine", "style_preset"):
            if key in checked and not isinstance(checked[key], str):
                raise ValueError(f"{key}: expected a string, got {checked[key]!r}")
    except ValueError as exc:
        raise StyleError(f"style {name!r}: {exc}") from None
    return StyleParams(**checked)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise StyleError(f"cannot read style file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise StyleError(f"{path}: {exc}") from None


def _config_styles(config: str | None) -> Mapping[str, Any]:
    chosen = config or os.environ.get("STABILITY_GATEWAY_CONFIG")
    if chosen is None:
        if not Path("config.toml").is_file():
            return {}
        chosen = "config.toml"
    styles = _read_toml(Path(chosen)).get("styles", {})
    if not isinstance(styles, Mapping):
        raise StyleError(f"{chosen}: [styles] must hold tables, [styles.NAME]")
    return styles
