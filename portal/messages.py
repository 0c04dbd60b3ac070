"""The API's user-facing messages in the caller's language (English, Chinese), keyed by template.

A message that names values is raised as `msg("serving {name!r} is already stopped", name=name)`: it reads
as the formatted English everywhere (logs, tests, `str()`), and remembers its template and values,
so the error handler can answer `Accept-Language: zh` with the catalog's Chinese template filled with
the same values. A fixed message is looked up as it is. Request validation errors are worded from
pydantic's error type and context (and a pattern's words, never the regular expression), so they
are translated the same way. Anything not in the catalog is answered in English.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CATALOG = Path(__file__).resolve().parent / "data" / "messages.zh.json"
LANGUAGES = ("en", "zh")


class Message(str):
    """English text that remembers the template and values it was made from."""

    template: str
    params: dict[str, Any]

    def __new__(cls, template: str, **params: Any) -> Message:
        made = super().__new__(cls, template.format(**params) if params else template)
        made.template, made.params = template, params
        return made


def msg(template: str, **params: Any) -> Message:
    return Message(template, **params)


@functools.cache
def catalog() -> Mapping[str, str]:
    data = json.loads(CATALOG.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{CATALOG.name} must be a flat object of strings")
    return data


def language(accept_language: str | None) -> str:
    """The first language of `Accept-Language` we speak; English otherwise."""
    for part in (accept_language or "").split(","):
        primary = part.split(";")[0].strip().lower().split("-")[0]
        if primary in LANGUAGES:
            return primary
    return "en"


def translate(text: str, lang: str) -> str:
    if lang != "zh":
        return str(text)
    if isinstance(text, Message):
        template = catalog().get(text.template)
        if template is None:
            return str(text)
        try:
            return template.format(**text.params) if text.params else template
        except (KeyError, IndexError, ValueError):  # a catalog typo must not turn an error into a 500
            return str(text)
    return catalog().get(str(text), str(text))


# -- request validation, in words ---------------------------------------------------------------------

# What each pattern a request field must match means, in words (en, zh): a user is never shown a
# regular expression. tests/portal/test_messages.py checks that every pattern in the API has words.
PATTERNS: dict[str, tuple[str, str]] = {
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$": (
        "use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
        "请使用 1-63 个小写字母、数字或“-”，并以字母或数字开头和结尾",
    ),
    r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])$": (
        "use 2-63 lowercase letters, digits or '-', starting with a letter and ending with a letter or digit",
        "请使用 2-63 个小写字母、数字或“-”，以字母开头，以字母或数字结尾",
    ),
    r"^[A-Za-z_][A-Za-z0-9_]*$": (
        "use letters, digits or '_', not starting with a digit",
        "请使用字母、数字或“_”，且不能以数字开头",
    ),
    r"^[A-Za-z0-9][-A-Za-z0-9._:/]*$": (
        "use letters, digits and - . _ : /, starting with a letter or digit",
        "请使用字母、数字及 - . _ : /，并以字母或数字开头",
    ),
    r"^[A-Za-z0-9][-A-Za-z0-9._:/]{0,127}$": (
        "use up to 128 letters, digits and - . _ : /, starting with a letter or digit",
        "请使用不超过 128 个字母、数字及 - . _ : /，并以字母或数字开头",
    ),
    r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,199}$": (
        "use up to 200 letters, digits and . _ @ -, starting with a letter or digit",
        "请使用不超过 200 个字母、数字及 . _ @ -，并以字母或数字开头",
    ),
    r"^(auto|[1-9][0-9]{0,4}x[1-9][0-9]{0,4})$": (
        "give a size as WIDTHxHEIGHT (e.g. 1024x1024) or auto",
        "请填写 宽x高 形式的尺寸（如 1024x1024）或 auto",
    ),
    r"^(s3|hf|pvc)://\S+$": (
        "give an address starting with s3://, hf:// or pvc://, without spaces",
        "请填写以 s3://、hf:// 或 pvc:// 开头且不含空格的地址",
    ),
    r"^(hf|s3|pvc)://\S+$": (
        "give an address starting with hf://, s3:// or pvc://, without spaces",
        "请填写以 hf://、s3:// 或 pvc:// 开头且不含空格的地址",
    ),
    r"^[a-z0-9][a-z0-9._-]{0,127}$": (
        "use up to 128 lowercase letters, digits and . _ -, starting with a letter or digit",
        "请使用不超过 128 个小写字母、数字及 . _ -，并以字母或数字开头",
    ),
    r"^[a-z0-9][a-z0-9._-]{0,62}$": (
        "use up to 63 lowercase letters, digits and . _ -, starting with a letter or digit",
        "请使用不超过 63 个小写字母、数字及 . _ -，并以字母或数字开头",
    ),
    r"^[a-z0-9]+(/[a-z0-9][-a-z0-9.]*)?$": (
        "give a vendor (nvidia, ascend, …) or vendor/model in lowercase",
        "请填写小写的厂商（nvidia、ascend 等）或 厂商/型号",
    ),
    r"^[^|\n\r]+$": ("must not contain '|' or line breaks", "不能包含“|”或换行"),
}

# pydantic error type -> (English, Chinese) templates over the error's context.
VALIDATION: dict[str, tuple[str, str]] = {
    "missing": ("required", "必填"),
    "string_too_short": ("needs at least {min_length} character(s)", "至少需要 {min_length} 个字符"),
    "string_too_long": ("at most {max_length} characters", "最多 {max_length} 个字符"),
    "too_short": ("needs at least {min_length} item(s)", "至少需要 {min_length} 项"),
    "too_long": ("at most {max_length} items", "最多 {max_length} 项"),
    "greater_than_equal": ("must be at least {ge}", "不能小于 {ge}"),
    "greater_than": ("must be more than {gt}", "必须大于 {gt}"),
    "less_than_equal": ("must be at most {le}", "不能大于 {le}"),
    "less_than": ("must be less than {lt}", "必须小于 {lt}"),
    "int_parsing": ("must be a whole number", "必须是整数"),
    "int_type": ("must be a whole number", "必须是整数"),
    "int_from_float": ("must be a whole number", "必须是整数"),
    "float_parsing": ("must be a number", "必须是数字"),
    "float_type": ("must be a number", "必须是数字"),
    "bool_parsing": ("must be true or false", "必须是 true 或 false"),
    "bool_type": ("must be true or false", "必须是 true 或 false"),
    "string_type": ("must be text", "必须是文本"),
    "list_type": ("must be a list", "必须是列表"),
    "dict_type": ("must be an object", "必须是对象"),
    "model_type": ("must be an object", "必须是对象"),
    "literal_error": ("must be one of: {expected}", "必须是以下之一：{expected}"),
    "enum": ("must be one of: {expected}", "必须是以下之一：{expected}"),
    "extra_forbidden": ("is not a known field", "不是可用的字段"),
    "json_invalid": ("is not valid JSON", "不是合法的 JSON"),
    "datetime_parsing": ("must be a date and time (ISO 8601)", "必须是日期时间（ISO 8601）"),
    "datetime_from_date_parsing": ("must be a date and time (ISO 8601)", "必须是日期时间（ISO 8601）"),
    "url_parsing": ("must be a URL", "必须是 URL"),
    "union_tag_invalid": ("must be one of: {expected_tags}", "必须是以下之一：{expected_tags}"),
}


def validation_message(error: Mapping[str, Any], lang: str) -> str:
    """One pydantic error in words, in `lang`."""
    kind = str(error.get("type", ""))
    ctx = dict(error.get("ctx") or {})
    index = 1 if lang == "zh" else 0
    if kind == "string_pattern_mismatch":
        words = PATTERNS.get(str(ctx.get("pattern", "")))
        return words[index] if words else ("has an unexpected format", "格式不正确")[index]
    if kind in VALIDATION:
        try:
            return VALIDATION[kind][index].format(**ctx)
        except (KeyError, IndexError, ValueError):
            return VALIDATION[kind][index].split(":")[0]
    text = str(error.get("msg", "")).removeprefix("Value error, ")
    return translate(text, lang)
