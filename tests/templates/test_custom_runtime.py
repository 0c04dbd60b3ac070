"""Ops add an engine by dropping a template in templates/engines/custom/: it renders like the others,
its flags are checked when a schema ships and reported as unchecked when it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet import render
from fleet.errors import RenderError, TemplateError
from fleet.pipeline import render_fleet
from fleet.stack import Fleet
from tests.fixtures import factories as f

EMBEDDINGS = f.template(
    "tei",
    engine="custom",
    runtime="text-embeddings",
    engine_version="1.8",
    entrypoint=["text-embeddings-router"],
    validate_flags=False,
    images={"nvidia": "ghcr.io/huggingface/text-embeddings-inference:1.8"},
    port=8080,
)


def custom_fleet(template: dict[str, object]) -> Fleet:
    config = f.config(templates=[template])
    return f.fleet(config, f.serving("embed", template=str(template["name"]), model="qwen3-8b"))


def test_custom_runtime_renders_its_template_and_is_reported_unchecked() -> None:
    rendering = render_fleet(custom_fleet(EMBEDDINGS))
    (placement,) = rendering.placements
    command = placement.launch.roles["single"]
    assert command.command == ("text-embeddings-router",)
    assert command.args == ("--model-id", "/models/qwen3-8b", "--hostname", "0.0.0.0", "--port", "8080",
                            "--max-batch-tokens", "8192")  # fmt: skip
    container = placement.objects[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/huggingface/text-embeddings-inference:1.8"
    assert [str(w) for w in rendering.warnings] == [
        "templates[tei]: validate_flags is off: engine flags are not checked"
    ]


def test_custom_runtime_with_flag_checks_on_needs_a_schema() -> None:
    template = {**EMBEDDINGS, "validate_flags": True}
    with pytest.raises(RenderError) as caught:
        render_fleet(custom_fleet(template))
    (issue,) = caught.value.issues
    assert issue.path == "templates[tei].engine_version"
    assert "no flag schema for text-embeddings 1.8" in issue.message


def test_missing_custom_template_names_the_file() -> None:
    template = {**EMBEDDINGS, "runtime": "nope"}
    with pytest.raises(RenderError) as caught:
        render_fleet(custom_fleet(template))
    assert "'engines/custom/nope.j2' not found" in str(caught.value)


def test_undefined_variable_fails_the_render(tmp_path: Path) -> None:
    (tmp_path / "typo.j2").write_text('{{ ["--port", prot] | argv }}')
    with pytest.raises(TemplateError) as caught:
        render.render_argv("typo.j2", {"port": 8000}, "servings[x]", tmp_path)
    assert "'prot' is undefined" in str(caught.value)


def test_text_outside_the_argv_filter_is_refused(tmp_path: Path) -> None:
    (tmp_path / "raw.j2").write_text('--port {{ port }}\n{{ ["--host", "0.0.0.0"] | argv }}')
    with pytest.raises(TemplateError) as caught:
        render.render_argv("raw.j2", {"port": 8000}, "servings[x]", tmp_path)
    assert "found raw text '--port 8000'" in str(caught.value)


def test_sandbox_keeps_templates_away_from_python_internals(tmp_path: Path) -> None:
    (tmp_path / "escape.j2").write_text("{{ [port.__class__.__mro__[1].__subclasses__()] | argv }}")
    with pytest.raises(TemplateError):
        render.render_argv("escape.j2", {"port": 8000}, "servings[x]", tmp_path)


def test_a_templates_set_leaves_the_callers_context_alone(tmp_path: Path) -> None:
    """The context is handed to Jinja without a copy: a template's `set` must not reach it."""
    (tmp_path / "set.j2").write_text('{% set port = 9000 %}{{ ["--port", port] | argv }}')
    context = {"port": 8000}
    assert render.render_argv("set.j2", context, "servings[x]", tmp_path) == ["--port", "9000"]
    assert context == {"port": 8000}
