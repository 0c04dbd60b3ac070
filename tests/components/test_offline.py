"""The recording monitor: engine URNs, duplicate detection, wire-format clean-up."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

from components.offline import Capture, DuplicateUrnError, Echo, Recorder, plain, run_program
from components.serving import TYPE as SERVING


class Outer(pulumi.ComponentResource):
    """A test-only component nesting another, to see a three-level type chain."""

    def __init__(self, name: str) -> None:
        super().__init__("test:index:Outer", name, None, None)
        inner = pulumi.ComponentResource(
            SERVING, f"{name}-serving", None, pulumi.ResourceOptions(parent=self)
        )
        k8s.apps.v1.Deployment(
            f"{name}-deploy",
            metadata={"name": name, "namespace": "ns"},
            spec={"replicas": 2, "selector": {"matchLabels": {"app": name}}},
            opts=pulumi.ResourceOptions(parent=inner),
        )
        self.register_outputs({})


def nested_program() -> None:
    serving = pulumi.ComponentResource(SERVING, "qwen", None, None)
    k8s.apps.v1.Deployment(
        "qwen-deployment",
        metadata={"name": "qwen", "namespace": "ns"},
        spec={"replicas": 2},
        opts=pulumi.ResourceOptions(parent=serving),
    )
    Outer("outer")


def urns_with(monitor_class: type[MockMonitor]) -> set[str]:
    mocks = Echo()
    monitor = monitor_class(mocks)
    pulumi.runtime.settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(mocks, project="modelfleet", stack="dev", preview=False, monitor=monitor)

    @pulumi.runtime.test
    def run() -> None:
        nested_program()

    run()
    return set(monitor.resources)


def test_urns_are_the_engines_not_the_stock_mocks() -> None:
    engine = (
        "urn:pulumi:dev::modelfleet::modelfleet:index:ModelServing$kubernetes:apps/v1:Deployment"
        "::qwen-deployment"
    )
    nested = (
        "urn:pulumi:dev::modelfleet::test:index:Outer$modelfleet:index:ModelServing"
        "$kubernetes:apps/v1:Deployment::outer-deploy"
    )
    component = "urn:pulumi:dev::modelfleet::modelfleet:index:ModelServing::qwen"
    ours = urns_with(Recorder)
    assert {engine, nested, component} <= ours
    assert not any("pulumi:pulumi:Stack" in u for u in ours)
    stock = urns_with(MockMonitor)
    # The stock monitor keeps the root stack in a top-level resource's type ...
    assert component not in stock
    assert "urn:pulumi:dev::modelfleet::pulumi:pulumi:Stack$modelfleet:index:ModelServing::qwen" in stock
    # ... and keeps only the parent's last type, so nested children lose their chain.
    assert nested not in stock
    assert (
        "urn:pulumi:dev::modelfleet::modelfleet:index:ModelServing$kubernetes:apps/v1:Deployment::outer-deploy"
        in stock
    )
    assert engine in stock  # one level down from a top-level component, both agree


def test_recorder_rejects_a_duplicate_urn() -> None:
    def program() -> None:
        k8s.core.v1.ConfigMap("cfg", metadata={"name": "a"})
        k8s.core.v1.ConfigMap("cfg", metadata={"name": "b"})

    with pytest.raises(DuplicateUrnError, match=r"kubernetes:core/v1:ConfigMap::cfg"):
        run_program(program)


def test_same_name_under_different_types_is_no_duplicate() -> None:
    def program() -> None:
        k8s.core.v1.ConfigMap("cfg", metadata={"name": "a"})
        k8s.core.v1.Secret("cfg", metadata={"name": "a"})

    assert len(run_program(program).resources) == 2


def test_the_stock_monitor_does_not_reject_duplicates() -> None:
    """Why Recorder exists: the stock monitor silently overwrites the first registration."""
    mocks = Echo()
    monitor = MockMonitor(mocks)
    pulumi.runtime.settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(mocks, project="p", stack="s", preview=False, monitor=monitor)

    @pulumi.runtime.test
    def run() -> None:
        k8s.core.v1.ConfigMap("cfg", metadata={"name": "a"})
        k8s.core.v1.ConfigMap("cfg", metadata={"name": "b"})

    run()
    assert len(monitor.resources) == 1


def test_captured_props_are_plain_manifests() -> None:
    def program() -> dict[str, Any]:
        provider = k8s.Provider("p", kubeconfig=pulumi.Output.secret("kc"), cluster_identifier="c")
        d = k8s.apps.v1.Deployment(
            "d",
            metadata={"name": "d", "namespace": "ns"},
            spec={"replicas": 3, "selector": {"matchLabels": {"app": "d"}}},
            opts=pulumi.ResourceOptions(provider=provider),
        )
        return {"replicas": d.spec.replicas}

    cap: Capture = run_program(program)
    (dep,) = cap.by_type("kubernetes:apps/v1:Deployment")
    (prov,) = cap.by_type("pulumi:providers:kubernetes")
    assert dep.props == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d"}}},
    }
    assert type(dep.props["spec"]["replicas"]) is int
    assert prov.props["kubeconfig"] == "kc"
    assert dep.provider == f"{prov.urn}::p-id"
    assert dep.parent == "" and prov.parent == ""
    assert cap.exports == {"replicas": 3}


def test_plain_unwraps_secrets_and_restores_ints() -> None:
    secret = {rpc._special_sig_key: rpc._special_secret_sig, "value": {"n": 2.0, "x": 0.5}}
    assert plain({"a": [1.0, secret, True, "s"]}) == {"a": [1, {"n": 2, "x": 0.5}, True, "s"]}
    assert plain(True) is True


def test_unexpected_invokes_fail_loudly() -> None:
    def program() -> None:
        pulumi.runtime.invoke("kubernetes:yaml:decode", {"text": "a: 1"})

    with pytest.raises(Exception, match="kubernetes:yaml:decode"):
        run_program(program)


def test_dependencies_are_recorded_in_one_order_every_run() -> None:
    """The SDK hands the monitor a resource's dependencies in Python set order (URNs expanded from
    a set of Resources, hashed by id()), which changes from run to run in one process. A capture
    compared with another (a test against the session's capture) must not see that order."""

    def program() -> None:
        config = [k8s.core.v1.ConfigMap(f"cfg-{i}", metadata={"name": f"cfg-{i}"}) for i in range(12)]
        k8s.core.v1.Secret("s", metadata={"name": "s"}, opts=pulumi.ResourceOptions(depends_on=config[::-1]))

    runs = [run_program(program).by_type("kubernetes:core/v1:Secret")[0].dependencies for _ in range(5)]
    assert len(runs[0]) == 12
    assert all(run == runs[0] for run in runs)
    assert list(runs[0]) == sorted(runs[0])
