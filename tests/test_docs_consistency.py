"""The docs name only settings, commands and HTTP routes that exist.

README.md and docs/**/*.md are scanned for three kinds of mention, and each mention is checked
against the real code (no network):

- `MODELFLEET_<NAME>` environment variables: a field of `portal.settings.Settings` (prefix
  `MODELFLEET_`, `__` for nested values), a benchmark knob read with `os.environ` in benchmarks/*.py,
  a test knob read the same way in tests/, or an entry of `NOT_SETTINGS` below. In settings tables
  with a `default` column, a default written as a plain value (`3`, `true`, `fail_closed`, `unset`) is
  the field's default.
- `python -m <module> [command] [--option ...]`: the module exists; for the Typer apps (`portal`,
  `fleet`) the command is registered and each `--option` is one of its parameters; for the argparse
  entry points the options appear in their `--help`.
- `METHOD /path`: the method and path are served by the portal, the stand-alone gateway or (in the
  simulator's doc) the engine simulator. `{param}` segments match by position, not by name.
- `curl` commands against the portal or gateway (`localhost:8000/...`, `$PORTAL/...`): their method
  (`-X`, else POST with a body, else GET) and path are served the same way.

Each mention is its own test id (`<doc>::<mention>`), so a failure names what to fix.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import typer
from pydantic import BaseModel
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import Scope

from portal.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# Variables the docs name that are not portal settings, each with the reason. A name here must still
# appear in the product's source (test_not_settings_are_still_used), so the list cannot rot.
NOT_SETTINGS = {
    # The user's own shell variable: the plaza's code examples and the console's `export` line read the
    # API key from it (portal/plaza/examples.py KEY_ENV); the portal itself never reads it.
    "MODELFLEET_API_KEY": ROOT / "portal" / "plaza" / "examples.py",
}

# Modules the docs run with `python -m` that are third-party tools, not ours.
THIRD_PARTY_MODULES = {"pytest"}

# Paths written relative to a base the doc states once ("All under `/api/workspaces/{ws}`").
RELATIVE_BASES = {
    ("docs/portal/servings-and-stack-updates.md", "/servings"): "/api/workspaces/{ws}",
    ("docs/portal/servings-and-stack-updates.md", "/stack-requests"): "/api/workspaces/{ws}",
}

# Method-and-path mentions that are not Modelfleet routes, each with the reason.
NOT_OUR_ROUTES = {
    # The GitHub REST API calls the pull-request backend makes (a third party's API).
    ("docs/portal/servings-and-stack-updates.md", "/repos/"),
    # The console's declarative forms, described generically (`data-api="POST /api/…"`).
    ("docs/console.md", "/api/…"),
}

# The engine simulator's own endpoints (`GET /health`) are documented here, next to the gateway's.
SIMULATOR_DOCS = {"docs/gateway/simulator-routing-metering.md"}


@dataclass(frozen=True)
class Mention:
    doc: str  # relative to the repository root
    text: str  # as written, runs of white space (and shell continuations) made one space

    def __str__(self) -> str:
        return f"{self.doc}::{self.text}"


def _logical_lines(path: Path) -> Iterator[str]:
    """The file's lines, with shell continuations (a trailing backslash) joined to the next line."""
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def _mentions(pattern: re.Pattern[str]) -> list[Mention]:
    found: dict[Mention, None] = {}  # ordered and without repeats within one doc
    for path in DOCS:
        doc = path.relative_to(ROOT).as_posix()
        for line in _logical_lines(path):
            for match in pattern.finditer(line):
                found[Mention(doc, " ".join(match.group().split()))] = None
    return list(found)


def _params(mentions: list[Mention]) -> list[Any]:
    return [pytest.param(m, id=str(m)) for m in mentions]


# -- environment variables ---------------------------------------------------------------------------

ENV_MENTIONS = [m for m in _mentions(re.compile(r"\bMODELFLEET_[A-Z0-9_]+\*?")) if m.text not in NOT_SETTINGS]


def _source(folder: Path, *, skip: Path | None = None) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*.py")) if p != skip)


def _reads_environ(source: str, name: str) -> bool:
    """`os.environ.get("NAME"...)` or `os.environ["NAME"]` in the source text."""
    return re.search(rf"""os\.environ(?:\.get\(|\[)\s*["']{re.escape(name)}["']""", source) is not None


def _is_setting(model: type[BaseModel], parts: list[str]) -> bool:
    """Whether `MODELFLEET_A__B__C` (parts a, b, c) names a field of Settings, nested with `__`."""
    field = model.model_fields.get(parts[0].lower())
    if field is None:
        return False
    rest = parts[1:]
    annotation = field.annotation
    if rest and get_origin(annotation) is dict:  # dict[str, Model]: the next part is a key
        annotation, rest = get_args(annotation)[1], rest[1:]
    if not rest:
        return True
    return (
        isinstance(annotation, type) and issubclass(annotation, BaseModel) and _is_setting(annotation, rest)
    )


@pytest.mark.parametrize("mention", _params(ENV_MENTIONS))
def test_environment_variable_is_real(mention: Mention) -> None:
    name = mention.text
    if name.endswith("*"):  # `MODELFLEET_GATEWAY_ON_REDIS_FAILURE_*`: a family of settings
        prefix = name.removeprefix("MODELFLEET_").rstrip("*").lower()
        assert any(f.startswith(prefix) for f in Settings.model_fields), f"no setting starts with {prefix}"
        return
    if name.startswith("MODELFLEET_BENCH_"):
        assert _reads_environ(_source(ROOT / "benchmarks"), name), f"benchmarks/*.py never read {name}"
        return
    if name.startswith("MODELFLEET_TEST_"):
        source = _source(ROOT / "tests", skip=Path(__file__).resolve())
        assert _reads_environ(source, name), f"the tests never read {name}"
        return
    parts = name.removeprefix("MODELFLEET_").split("__")
    assert _is_setting(Settings, parts), f"{name} is not a field of portal.settings.Settings"


def _table_defaults(path: Path) -> Iterator[tuple[str, str]]:
    """(variable, default as written) for rows of tables whose header has a `default` column."""
    default_column: int | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            default_column = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if default_column is None:
            default_column = cells.index("default") if "default" in cells else -1
            continue
        if default_column < 0 or set(cells[0]) <= set("-: ") or len(cells) <= default_column:
            continue
        names = re.findall(r"`(MODELFLEET_[A-Z0-9_]+)`", cells[0])
        values = [v.strip() for v in cells[default_column].split(" / ")]
        if names and len(values) in (1, len(names)):
            yield from zip(names, values * len(names) if len(values) == 1 else values, strict=True)


def _plain(value: str) -> str | None:
    """The value of a default written plainly (`3`, `` `mf` ``, `unset`); None for prose."""
    value = value.strip("`")
    return value if re.fullmatch(r"[\w.:/-]+", value) else None


def _default_mentions() -> list[Mention]:
    found: dict[Mention, None] = {}
    for path in DOCS:
        for name, written in _table_defaults(path):
            field = Settings.model_fields.get(name.removeprefix("MODELFLEET_").lower())
            value = _plain(written)
            # A field without a default of its own (None) is derived from others: the doc may describe
            # the derived value (`var/stacks-repo`); only `unset` is checked then.
            if field is None or value is None or (field.default is None and value != "unset"):
                continue
            found[Mention(path.relative_to(ROOT).as_posix(), f"{name} default {value}")] = None
    return list(found)


@pytest.mark.parametrize("mention", _params(_default_mentions()))
def test_documented_default_is_the_settings_default(mention: Mention) -> None:
    name, _, written = mention.text.split()
    default = Settings.model_fields[name.removeprefix("MODELFLEET_").lower()].default
    if written == "unset":
        assert default is None, f"{name} defaults to {default!r}, not unset"
    elif isinstance(default, bool):
        assert written == str(default).lower(), f"{name} defaults to {default}"
    elif isinstance(default, int | float):
        assert float(written) == default, f"{name} defaults to {default}"
    else:
        assert written == str(default), f"{name} defaults to {default!r}"


def test_not_settings_are_still_used() -> None:
    for name, source in NOT_SETTINGS.items():
        assert name in source.read_text(encoding="utf-8"), f"{name} no longer appears in {source}"


def test_settings_env_prefix_is_the_documented_one() -> None:
    assert Settings.model_config.get("env_prefix") == "MODELFLEET_"
    assert Settings.model_config.get("env_nested_delimiter") == "__"


# -- commands ----------------------------------------------------------------------------------------

# `python -m module rest-of-the-command`; the command ends at a comment, a shell operator, a quote or the
# end of the code span.
CLI_MENTIONS = [
    m
    for m in _mentions(re.compile(r"python -m [a-z_][a-z0-9_.]*[^`#;|&)\"'\n]*"))
    if m.text.split()[2] not in THIRD_PARTY_MODULES
]


def _typer_apps() -> dict[str, typer.Typer]:
    from fleet.cli import app as fleet_app
    from portal.cli import app as portal_app

    return {"portal": portal_app, "fleet": fleet_app}


def _argparse_mains() -> dict[str, Callable[[list[str]], None]]:
    from gateway.__main__ import main as gateway_main
    from simulator.app import main as simulator_main

    return {"gateway": gateway_main, "simulator.app": simulator_main, "simulator": simulator_main}


@cache
def _argparse_options(module: str) -> frozenset[str]:
    """The `--options` an argparse entry point lists in its `--help` (which exits before serving)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        _argparse_mains()[module](["--help"])
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out.getvalue()))


def _module_exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def _option_names(command: Any) -> dict[str, Any]:
    """`--name` -> parameter of a Click command (Typer's, duck-typed: Typer vendors its own Click)."""
    return {
        opt: param
        for param in command.params
        for opt in (*param.opts, *getattr(param, "secondary_opts", []))
        if opt.startswith("-")
    }


def _check_typer(module: str, tokens: list[str]) -> None:
    group = typer.main.get_command(_typer_apps()[module])
    command = group
    options = _option_names(group)
    expects_value = False
    for token in tokens:
        if expects_value:
            expects_value = False
            continue
        if token.startswith("-"):
            name = token.split("=", 1)[0]
            if name == "--help":
                continue
            assert name in options, f"`{command.name}` has no option {name} (it has: {sorted(options)})"
            param = options[name]
            expects_value = "=" not in token and not getattr(param, "is_flag", False)
        elif command is group:
            assert token in group.commands, (
                f"python -m {module} has no command {token!r}: {sorted(group.commands)}"
            )
            command = group.commands[token]
            options = _option_names(command)


@pytest.mark.parametrize("mention", _params(CLI_MENTIONS))
def test_command_is_real(mention: Mention) -> None:
    module, *rest = mention.text.removeprefix("python -m ").split(maxsplit=1)
    tokens = [t for t in re.sub(r"[\[\]]", " ", " ".join(rest)).split() if t not in {"...", "…"}]
    assert _module_exists(module), f"no module {module} in the repository"
    if module in _typer_apps():
        _check_typer(module, tokens)
    elif module in _argparse_mains():
        unknown = {t.split("=", 1)[0] for t in tokens if t.startswith("--")} - _argparse_options(module)
        assert not unknown, f"python -m {module} has no option {sorted(unknown)}"


# -- HTTP routes -------------------------------------------------------------------------------------


def _path(mention: Mention) -> str:
    """The path a method-and-path mention names, without query (`?q=`) or optional parts (`[?q=]`)."""
    written = mention.text.removeprefix("curl ").split(maxsplit=1)[1]
    return re.split(r"[?\[]", written, maxsplit=1)[0].rstrip(".:")


def _ours(mention: Mention) -> bool:
    return not any(mention.doc == doc and _path(mention).startswith(p) for doc, p in NOT_OUR_ROUTES)


HTTP_MENTIONS = _mentions(re.compile(r"\b(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)[ \t]+/[^\s`|),;\"'<]*"))


def _concrete(path: str) -> str:
    """A request path for the mention: `{param}` segments become a value any path parameter takes."""
    return re.sub(r"\{[^}/]*\}", "1", path)


def _served(routes: list[BaseRoute], scope: Scope) -> bool:
    """Whether a request with this scope reaches an endpoint (path and method), walking into mounts.
    Uses the routes' own matching, so converters and prefixes behave as they do for real requests."""
    for route in routes:
        match, child = route.matches(scope)
        if match is not Match.FULL:
            continue
        if isinstance(route, Mount):
            inner = route.routes
            if not inner:  # a mounted app without a route table (static files) serves the whole tree
                return True
            if _served(inner, {**scope, **child}):
                return True
            continue
        return True
    return False


@pytest.fixture(scope="module")
def route_tables(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[BaseRoute]]]:
    """The route tables of the real apps, built as the portal and gateway tests build them."""
    from gateway.app import create_gateway
    from portal.app import build_services, create_app
    from simulator.app import Simulator
    from store.security import USER_TOKEN_PREFIX, issue

    tmp = tmp_path_factory.mktemp("docs-routes")
    settings = Settings(
        data_dir=tmp / "var",
        database_url=f"sqlite:///{tmp / 'store.db'}",
        admin_token=issue(USER_TOKEN_PREFIX).value,  # type: ignore[arg-type]
        pepper="test-pepper",  # type: ignore[arg-type]
        worker_enabled=False,
    )
    services = build_services(settings)
    try:
        yield {
            "portal": create_app(services=services).routes,
            "gateway": create_gateway(services).routes,  # stand-alone: /v1/..., /healthz, /metrics
            "simulator": Simulator().app.routes,
        }
    finally:
        services.engine.dispose()


def _curl_requests(line: str) -> Iterator[str]:
    """`curl METHOD /path` for each curl command of the line that calls a local server or `$VAR/...`."""
    for command in re.findall(r"\bcurl\s[^#\n]*", line):
        url = re.search(
            r"""(?:https?://)?(?:localhost|127\.0\.0\.1)(?::\d+)?(/[^\s"']*)|\$\{?\w+\}?(/[^\s"']*)""",
            command,
        )
        if url is None:
            continue
        explicit = re.search(r"(?:-X|--request)\s*([A-Z]+)", command)
        has_body = re.search(r"(?:^|\s)(?:-d|--data[\w-]*|-F|--form)\b", command) is not None
        method = explicit.group(1) if explicit else "POST" if has_body else "GET"
        yield f"curl {method} {url.group(1) or url.group(2)}"


def _curl_mentions() -> list[Mention]:
    found: dict[Mention, None] = {}
    for path in DOCS:
        doc = path.relative_to(ROOT).as_posix()
        for line in _logical_lines(path):
            found.update(dict.fromkeys(Mention(doc, request) for request in _curl_requests(line)))
    return list(found)


@pytest.mark.parametrize("mention", _params([m for m in HTTP_MENTIONS + _curl_mentions() if _ours(m)]))
def test_http_route_is_real(mention: Mention, route_tables: dict[str, list[BaseRoute]]) -> None:
    method = mention.text.removeprefix("curl ").split()[0]
    path = _path(mention)
    for (doc, prefix), base in RELATIVE_BASES.items():
        if mention.doc == doc and path.startswith(prefix):
            path = base + path
    # `/api/workspaces/{ws}/servings…`: the path or the item under it.
    family = path.endswith("…")
    path = path.rstrip("…")
    candidates = [path, f"{path.rstrip('/')}/1"] if family else [path]
    apps = ["portal", "gateway"] + (["simulator"] if mention.doc in SIMULATOR_DOCS else [])
    for candidate in candidates:
        path_only = _concrete(candidate)
        scope: Scope = {"type": "http", "method": method, "path": path_only, "root_path": "", "headers": []}
        # A copy per app: FastAPI's matching notes its state in the scope it is given.
        if any(_served(route_tables[app], dict(scope)) for app in apps):
            return
    pytest.fail(f"no {method} {path} in the {' / '.join(apps)} routes")
