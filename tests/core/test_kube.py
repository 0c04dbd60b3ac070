"""Offline schema validation: what we render is what the API server (and the LWS CRD) would admit."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fleet.kube import UNCHECKED_KINDS, validate_manifest
from fleet.pipeline import Rendering
from tests.templates.cases import CASE_IDS, rendering

K8S = "1.33"


def objects_of(r: Rendering) -> list[dict[str, Any]]:
    return [obj for _, obj in r.objects()]


def lws() -> dict[str, Any]:
    [obj] = [
        o for o in objects_of(rendering("vllm/nvidia/multi-node-native")) if o["kind"] == "LeaderWorkerSet"
    ]
    return copy.deepcopy(obj)


def deployment() -> dict[str, Any]:
    [obj] = [o for o in objects_of(rendering("vllm/nvidia/single-node")) if o["kind"] == "Deployment"]
    return copy.deepcopy(obj)


def test_every_demo_object_validates(demo: Rendering) -> None:
    failures = {
        f"{o['kind']}/{o['metadata']['name']}": errors
        for o in objects_of(demo)
        if (errors := validate_manifest(o, demo.fleet.platform.kubernetes_version))
    }
    assert failures == {}
    kinds = {o["kind"] for o in objects_of(demo)}
    assert {"Namespace", "Deployment", "LeaderWorkerSet", "Service", "PodDisruptionBudget"} <= kinds


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_every_golden_case_validates(case_id: str) -> None:
    for obj in objects_of(rendering(case_id)):
        assert validate_manifest(obj, K8S) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_deployment_with_unknown_container_field_is_rejected() -> None:
    broken = deployment()
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    [error] = validate_manifest(broken, K8S)
    assert "imagePullPolicyy" in error


def test_deployment_with_wrong_type_is_rejected() -> None:
    broken = deployment()
    broken["spec"]["replicas"] = "two"
    [error] = validate_manifest(broken, K8S)
    assert error.startswith("spec.replicas:")


def test_lws_with_unknown_restart_policy_is_rejected() -> None:
    broken = lws()
    broken["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "Sometimes"
    [error] = validate_manifest(broken, K8S)
    assert error.startswith("spec.leaderWorkerTemplate.restartPolicy: 'Sometimes' is not one of")


def test_lws_with_unknown_field_in_a_pod_template_is_rejected() -> None:
    broken = lws()
    broken["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["comand"] = ["x"]
    [error] = validate_manifest(broken, K8S)
    assert "workerTemplate.spec.containers.0" in error and "'comand' was unexpected" in error


def test_lws_with_unknown_field_in_its_spec_is_rejected() -> None:
    broken = lws()
    broken["spec"]["leaderWorkerTemplate"]["sise"] = 2
    [error] = validate_manifest(broken, K8S)
    assert "'sise' was unexpected" in error


def test_every_lws_error_is_listed() -> None:
    broken = lws()
    broken["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "Sometimes"
    broken["spec"]["startupPolicy"] = "Whenever"
    assert len(validate_manifest(broken, K8S)) == 2


def test_scaled_object_is_unchecked_and_says_so() -> None:
    [scaler] = [
        o for o in objects_of(rendering("vllm/nvidia/hami-tp2-autoscaled")) if o["kind"] == "ScaledObject"
    ]
    assert (scaler["apiVersion"], scaler["kind"]) in UNCHECKED_KINDS
    assert validate_manifest(scaler, K8S) == []


def test_kubernetes_version_without_schemas_is_reported() -> None:
    [error] = validate_manifest(deployment(), "1.99")
    assert "no schemas for Kubernetes 1.99" in error
