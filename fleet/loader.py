"""Read a stack from disk: `stacks/Pulumi.<stack>.yaml` plus `stacks/<stack>/servings/*.yaml` and
`stacks/<stack>/model-files/*.yaml`.

This is the one place the offline tools read stack files; the Pulumi program gets the same config
from the engine and the same serving and model-files files through `read_servings` and
`read_model_files`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fleet.errors import Issue, SpecError
from fleet.stack import Fleet, build_fleet

NAMESPACE = "modelfleet"
SECTIONS = ("platform", "regions", "pools", "templates")
SERVING_SUFFIXES = (".yaml", ".yml")
MODEL_FILES_DIR = "model-files"


def _read_yaml(path: Path, label: str) -> Any:
    try:
        return yaml.load(path.read_text("utf-8"), Loader=yaml.CSafeLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Issue(label, f"cannot read {path.name}: {exc}")]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError([Issue(label, f"{path.name} is not valid YAML{where}: {exc}")]) from exc


def stack_config(stacks_dir: Path, stack: str) -> dict[str, Any]:
    """The `modelfleet:` sections of the stack file, keyed without the namespace."""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[7:-5] for p in stacks_dir.glob("Pulumi.*.yaml"))
        raise SpecError([Issue("", f"no stack {stack!r} in {stacks_dir} (have: {', '.join(known)})")])
    doc = _read_yaml(path, path.name) or {}
    if not isinstance(doc, dict):
        raise SpecError([Issue("", f"{path.name} must hold a mapping with a config: section")])
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise SpecError([Issue("config", f"{path.name}: config must be a mapping of settings")])
    out: dict[str, Any] = {}
    issues: list[Issue] = []
    for key, value in config.items():
        namespace, _, name = str(key).partition(":")
        if namespace != NAMESPACE:
            continue  # pulumi:, kubernetes: and other providers' settings
        if name in SECTIONS:
            out[name] = value
        elif not (isinstance(value, dict) and "secure" in value):
            issues.append(Issue(f"config.{key}", f"unknown setting; expected one of {SECTIONS}"))
    if issues:
        raise SpecError(issues)
    return out


def _read_folder(folder: Path, section: str, noun: str) -> list[tuple[str, Any]]:
    """(path, raw object) per file of `folder`; the file name must be the object's name. `.yaml` and
    `.yml` are both read (one of each for the same name is refused); anything else is named."""
    out: list[tuple[str, Any]] = []
    issues: list[Issue] = []
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    stems: dict[str, str] = {}
    for file in files:
        if file.name.startswith(".") or file.is_dir():
            continue
        label = f"{section}[{file.stem}]"
        if file.suffix == ".md":
            continue  # notes next to the files
        if file.suffix not in SERVING_SUFFIXES:
            issues.append(Issue(label, f"{file.name}: {noun} files end in .yaml (or .yml); rename it"))
            continue
        if file.stem in stems:
            issues.append(Issue(label, f"both {stems[file.stem]} and {file.name} define it; keep one"))
            continue
        stems[file.stem] = file.name
        raw = _read_yaml(file, label)
        if not isinstance(raw, dict):
            issues.append(Issue(label, f"{file.name} must hold one mapping (a {noun})"))
            continue
        if raw.get("name") != file.stem:
            issues.append(
                Issue(
                    f"{label}.name",
                    f"must be {file.stem!r}, the file name (got {raw.get('name')!r})",
                )
            )
            continue
        out.append((label, raw))
    if issues:
        raise SpecError(issues)
    return out


def read_servings(stacks_dir: Path, stack: str) -> list[tuple[str, Any]]:
    """(path, raw serving) per file of `stacks/<stack>/servings/`; the file name is the serving's."""
    return _read_folder(stacks_dir / stack / "servings", "servings", "serving")


def read_model_files(stacks_dir: Path, stack: str) -> list[tuple[str, Any]]:
    """(path, raw model files) per file of `stacks/<stack>/model-files/`; the file name is the
    model's id (the portal writes one file per model-files request)."""
    return _read_folder(stacks_dir / stack / MODEL_FILES_DIR, "model_files", "model-files")


def load_fleet(stacks_dir: Path, stack: str) -> Fleet:
    return build_fleet(
        stack,
        stack_config(stacks_dir, stack),
        read_servings(stacks_dir, stack),
        read_model_files(stacks_dir, stack),
    )
