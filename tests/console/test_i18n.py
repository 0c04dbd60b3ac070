"""The message catalogs: both languages have the same keys and placeholders, and every key the
templates and scripts use exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

from console.i18n import CATALOG_DIR, Translator, choose
from portal.observe.states import State
from store.periods import QUOTA_REFRESH_CYCLES
from store.vocabulary import CAPABILITIES

CONSOLE = Path(__file__).resolve().parents[2] / "console"
# Keys built at run time from a value (t('cap.' ~ c), t(`state.${s}`)): their families must be complete.
DYNAMIC = {
    "cap": list(CAPABILITIES),
    "state": [
        *(s.value for s in State),
        "starting",
        "active",
        "deploying",
        "updating",
        "deleting",
        "stopped",
        "failed",
        "queued",
        "applying",
        "applied",
        "proposed",
        "rejected",
        "running",
        "succeeded",
        "disabled",
        "enabled",
        "expired",
        "exhausted",
        "success",
        "failure",
    ],
    "action": ["create", "update", "scale", "stop", "start", "delete"],
    "level": ["mandatory", "advisory", "info"],
    "store": ["ok", "missing", "unreachable"],
    "scope": ["global", "model", "workspace", "api_key", "api_key_model"],
    "unit": ["rps", "rpm", "tpm", "tpd", "concurrency"],
    "strategy": ["round_robin", "weighted", "random", "least_busy", "latency"],
    "compare.status": ["completed", "client_disconnected", "upstream_error", "error"],
    "ops.vis": ["all", "specified"],
    "error.title": ["403", "404"],
    "refresh": list(QUOTA_REFRESH_CYCLES),
}


def load(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((CATALOG_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    return data


def test_both_catalogs_have_the_same_keys_and_placeholders() -> None:
    en, zh = load("en"), load("zh")
    assert sorted(en) == sorted(zh)
    for key in en:
        assert set(re.findall(r"\{(\w+)\}", en[key])) == set(re.findall(r"\{(\w+)\}", zh[key])), key
        assert zh[key].strip(), key


def test_every_key_in_templates_and_scripts_exists() -> None:
    en = load("en")
    families = {key.split(".")[0] for key in en}
    used: set[str] = set()
    for path in [*CONSOLE.rglob("*.html"), *CONSOLE.rglob("*.js"), *CONSOLE.rglob("*.py")]:
        used |= set(re.findall(r"""['"`]([a-z]+\.[a-z0-9_-]+)['"`]""", path.read_text(encoding="utf-8")))
    wanted = {k for k in used if k.split(".")[0] in families and not k.endswith((".html", ".js", ".py", "_"))}
    assert sorted(wanted - set(en)) == []
    for family, members in DYNAMIC.items():
        sep = "_" if "." in family else "."
        assert [m for m in members if f"{family}{sep}{m}" not in en] == [], family


def test_translator_falls_back_to_english_then_the_key() -> None:
    zh = Translator("zh")
    assert zh("nav.plaza") == "模型广场"
    assert zh("plaza.count", n=3) == "共 3 个模型"
    en = Translator("en")
    assert (en("plaza.count", n=1), en("plaza.count", n=2), en("plaza.count", n=0)) == (
        "1 model",
        "2 models",
        "0 models",
    )
    assert zh("no.such.key") == "no.such.key"
    assert Translator("fr").lang == "en"
    assert Translator("en")("common.page_of", page=1) == "Page 1 of {pages} · {total} in all"


def test_language_choice() -> None:
    assert choose("zh", "en", "en-US") == "zh"
    assert choose(None, "zh", "en-US") == "zh"
    assert choose("xx", None, "zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert choose(None, None, "fr-FR,de;q=0.5") == "en"
    assert choose(None, None, None) == "en"
