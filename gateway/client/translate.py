"""Chinese (and other CJK) descriptions to English before they reach SDXL.

SDXL reads English; a Chinese description would buy an image of nothing in particular.
Anything with a `translate(text) -> str` method, or any plain callable, can translate
(an LLM, a translation API). Built in is the seeds' "simple dictionary": a phrase table,
longest phrase first. A description that still holds CJK text after translation is an
error naming the phrase (no credit is spent on it), unless `on_untranslated="keep"`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from gateway.client.errors import TranslationError

log = logging.getLogger("gateway.client")

# Han (with extensions and compatibility ideographs), kana, Hangul, and CJK punctuation.
CJK = re.compile(
    "[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\U00020000-\U0002fa1f]+"
)
# Full-width punctuation NFKC leaves alone, as its ASCII counterpart.
_PUNCTUATION = str.maketrans(
    {"、": ",", "。": ".", "「": '"', "」": '"', "『": '"', "』": '"', "《": '"', "》": '"'}
)


@runtime_checkable
class Translator(Protocol):
    """Turns a description into English; text already in English comes back unchanged."""

    def translate(self, text: str) -> str: ...


TranslatorLike = Translator | Callable[[str], str]


def has_cjk(text: str) -> bool:
    return CJK.search(text) is not None


def tidy(text: str) -> str:
    """Full-width punctuation to ASCII, one space between words, none before , . ; : ! ?"""
    text = unicodedata.normalize("NFKC", text).translate(_PUNCTUATION)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r",(?=[^\s\d])", ", ", text)
    return re.sub(r",(\s*,)+", ",", text)


class GlossaryTranslator:
    """Phrase-table translation, longest phrase first.

    `glossary` is a mapping, or the path of a TOML or JSON file holding one (TOML: either
    top-level `"一座寧靜的山景" = "A serene mountain landscape"` pairs or a `[glossary]`
    table). Each phrase found is replaced by its translation with spaces around it, so
    phrases translated word by word read as words.
    """

    def __init__(
        self,
        glossary: Mapping[str, str] | str | os.PathLike[str],
        *,
        on_untranslated: Literal["error", "keep"] = "error",
    ) -> None:
        if on_untranslated not in ("error", "keep"):
            raise ValueError("on_untranslated must be 'error' or 'keep'")
        self.source = "the glossary"
        if isinstance(glossary, Mapping):
            table = dict(glossary)
        else:
            self.source = os.fspath(glossary)
            table = load_glossary(Path(glossary))
        self.table = {unicodedata.normalize("NFKC", k): v for k, v in table.items() if k}
        self.on_untranslated = on_untranslated
        phrases = sorted(self.table, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, phrases))) if phrases else None

    def translate(self, text: str) -> str:
        if not has_cjk(text):
            return text
        normalised = unicodedata.normalize("NFKC", text)
        if self._pattern is not None:
            normalised = self._pattern.sub(lambda m: f" {self.table[m.group(0)]} ", normalised)
        translated = tidy(normalised)
        left = CJK.search(translated)
        if left is not None:
            phrase = left.group(0)
            message = (
                f"no translation for {phrase!r} in the description {text!r}; "
                f"add it to {self.source}"
            )
            if self.on_untranslated == "error":
                raise TranslationError(message, phrase=phrase)
            log.warning("%s (kept untranslated)", message)
        return translated


def load_glossary(path: Path) -> dict[str, str]:
    """A phrase table from TOML or JSON (by extension; TOML unless it ends in .json)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TranslationError(f"cannot read glossary {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw) if path.suffix.lower() == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise TranslationError(f"glossary {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("glossary"), dict):
        data = data["glossary"]
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise TranslationError(f"glossary {path}: expected phrase = translation pairs of text")
    return data


def as_translate(translator: TranslatorLike | None) -> Callable[[str], str]:
    """The function to call: a Translator's method, a callable itself, or (None) an empty
    glossary, which passes English through and refuses any CJK text."""
    if translator is None:
        return GlossaryTranslator({}).translate
    if isinstance(translator, Translator):
        return translator.translate
    return translator
