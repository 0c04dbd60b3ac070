"""The one Jinja environment. Templates are data; this module is the only reader of `templates/`.

Sandboxed (a template cannot reach Python internals) and strict (a missing variable is an error, never
an empty flag). Templates write arguments with the `argv` filter, each item framed on its own, so a value with
spaces or quotes is one argv item exactly as written: no shell ever splits it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.runtime import new_context
from jinja2.sandbox import SandboxedEnvironment

from fleet.errors import Issue, TemplateError

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


# Each argv item is framed by two control characters no real argument contains; what a template
# writes outside the argv filter (newlines, indentation) falls between frames and is dropped, and
# any other stray text is an error. Cheaper than JSON-encoding every item at 10,000 servings.
START, END = "\x1e", "\x1f"
ITEM = re.compile(f"{START}([^{END}]*){END}")
FRAMED = END + START  # between two items


def _argv(items: list[object]) -> str:
    """The `argv` filter: `{{ ["--port", port] | argv }}`. A filter, not a global function: the
    sandbox checks every global call at run time, filters are bound when the template compiles."""
    texts = list(map(str, items))  # str() of a str is itself
    if not texts:
        return ""
    # One scan of all the items for a stray frame character, then one join that frames them.
    joined = "".join(texts)
    if START in joined or END in joined:
        bad = next(text for text in texts if START in text or END in text)
        raise ValueError(f"argument {bad!r} contains a control character")
    return f"{START}{FRAMED.join(texts)}{END}"


@cache
def environment(templates_dir: Path = TEMPLATES_DIR) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    env.filters["argv"] = _argv
    return env


@cache
def read_asset(name: str, templates_dir: Path = TEMPLATES_DIR) -> str:
    """A non-template file shipped with the templates (a launcher script), read verbatim."""
    return (templates_dir / name).read_text("utf-8")


def has_template(name: str, templates_dir: Path = TEMPLATES_DIR) -> bool:
    return (templates_dir / name).is_file()


@cache
def engine_template(
    engine: str, vendor: str, runtime: str | None, templates_dir: Path = TEMPLATES_DIR
) -> str:
    """The vendor overlay `engines/<engine>/<vendor>.j2` if there is one, else the engine's base."""
    if engine == "custom":
        return f"engines/custom/{runtime}.j2"
    overlay = f"engines/{engine}/{vendor}.j2"
    return overlay if has_template(overlay, templates_dir) else f"engines/{engine}/args.j2"


@cache
def _template(name: str, templates_dir: Path) -> jinja2.Template:
    """The compiled template: Jinja's own lookup re-checks its cache key on every call."""
    return environment(templates_dir).get_template(name)


def render_argv(
    name: str, context: Mapping[str, Any], path: str, templates_dir: Path = TEMPLATES_DIR
) -> list[str]:
    try:
        template = _template(name, templates_dir)
        # What Template.render does, minus copying the environment's globals into every context
        # (engine templates use none, and at 10,000 renders the copy is a quarter of the cost) and
        # minus listing them for imports (engine templates import nothing).
        # Jinja never writes to the variables it is given (a template's own `set` goes to the
        # context's locals), so a plain dict is passed as it is: no copy per render.
        variables = context if type(context) is dict else dict(context)
        ctx = new_context(template.environment, name, template.blocks, variables, shared=True)
        text = "".join(template.root_render_func(ctx))
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(
            [Issue(path, f"template {exc.name!r} not found in {templates_dir.name}/")]
        ) from exc
    except jinja2.TemplateError as exc:
        raise TemplateError([Issue(path, f"{name}: {exc}")]) from exc
    # One pass: what lies between frames (even slots), then the framed items (odd slots).
    parts = ITEM.split(text)
    stray = "".join(parts[0::2]).strip()
    if stray:
        raise TemplateError(
            [Issue(path, f"{name}: write arguments with the argv filter, found raw text {stray[:40]!r}")]
        )
    return parts[1::2]
