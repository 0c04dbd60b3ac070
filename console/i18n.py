"""Message catalogs (`i18n/<lang>.json`, flat `key: text` maps) and how a request picks its language.

The language is `?lang=` when given (and then remembered in a cookie), else the cookie, else the
browser's `Accept-Language`, else English. A key missing from a catalog falls back to English, then to
the key itself, so a forgotten translation shows up as English rather than as an error
(`tests/console/test_i18n.py` keeps both catalogs complete). A count is passed as `n`; when it is 1
and the catalog has `<key>_one`, that wording is used ("1 model", "2 models").
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path

LANGUAGES: dict[str, str] = {"en": "English", "zh": "中文"}
DEFAULT = "en"
CATALOG_DIR = Path(__file__).resolve().parent / "i18n"


@functools.cache
def catalog(lang: str) -> Mapping[str, str]:
    data = json.loads((CATALOG_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{lang}.json must be a flat object of strings")
    return data


class _Missing(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT
        self.messages = catalog(self.lang)
        self.fallback = catalog(DEFAULT)

    def __call__(self, key: str, **values: object) -> str:
        if values.get("n") == 1 and f"{key}_one" in self.fallback:  # "1 model", not "1 models"
            key = f"{key}_one"
        text = self.messages.get(key) or self.fallback.get(key) or key
        return text.format_map(_Missing(values)) if values else text


def choose(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return candidate
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        primary = tag.split("-")[0]
        if primary in LANGUAGES:
            return primary
    return DEFAULT
