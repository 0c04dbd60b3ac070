"""Offline schema checks for rendered objects, the way the API server would admit them.

Built-in kinds are checked with kubernetes-validate in strict mode (unknown fields are errors) for the
stack's Kubernetes version; LeaderWorkerSets against the CRD's own openAPIV3Schema.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate

from fleet.manifests import LWS_API

# Custom resources we render but ship no schema for: reported by `fleet check`, never silently passed.
UNCHECKED_KINDS = frozenset({("keda.sh/v1alpha1", "ScaledObject")})


def _strict(schema: Any) -> Any:
    """The API server prunes (or, with strict field validation, refuses) fields a structural schema does
    not list; JSON Schema allows them. Close every object that lists its properties, as strict mode does."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@cache
def _lws_validator() -> jsonschema.Draft7Validator:
    text = resources.files("fleet").joinpath("data/crds/leaderworkerset-v1.schema.json").read_text("utf-8")
    return jsonschema.Draft7Validator(_strict(json.loads(text)))


def is_checked(manifest: dict[str, Any]) -> bool:
    return (manifest.get("apiVersion"), manifest.get("kind")) not in UNCHECKED_KINDS


def validate_manifest(manifest: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Every schema error of one object, as readable strings (empty when it is valid)."""
    api, kind = manifest.get("apiVersion"), manifest.get("kind")
    if (api, kind) in UNCHECKED_KINDS:
        return []
    if api == LWS_API and kind == "LeaderWorkerSet":
        return [
            f"{'.'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
            for err in sorted(_lws_validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
        ]
    try:
        kubernetes_validate.validate(manifest, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        # The library copies the jsonschema error's attributes onto its own (it keeps no `caught`).
        where = ".".join(str(p) for p in exc.absolute_path) or "<root>"
        return [f"{where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {kind} {api} in Kubernetes {kubernetes_version}"]
    except kubernetes_validate.utils.VersionNotSupportedError:
        return [f"kubernetes-validate has no schemas for Kubernetes {kubernetes_version}"]
    return []
