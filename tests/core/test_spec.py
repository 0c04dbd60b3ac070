"""Spec errors: one test per kind, each pinned to the YAML path a reviewer would look at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.errors import Issue, SpecError
from fleet.loader import load_fleet, read_servings, stack_config
from fleet.pipeline import render_fleet
from tests.fixtures import factories as f

H100 = f.nvidia_h100_80g_x8.pool_name


def spec_issues(config: dict[str, Any], *servings: dict[str, Any]) -> list[Issue]:
    with pytest.raises(SpecError) as caught:
        f.fleet(config, *servings)
    return list(caught.value.issues)


def message_at(issues: list[Issue], path: str) -> str:
    """The one message reported at `path` (fails, listing everything, if there is none or several)."""
    found = [i.message for i in issues if i.path == path]
    assert len(found) == 1, f"expected one issue at {path}, got: {[str(i) for i in issues]}"
    return found[0]


def test_the_factory_stack_is_valid() -> None:
    """Every error test below changes one field of this stack; it must be valid to begin with."""
    fleet = f.fleet(f.config(), f.serving())
    assert [s.name for s in fleet.servings] == ["chat"]
    assert fleet.pools[H100].resource_name == "nvidia.com/gpu"


def test_unknown_field_is_reported_at_its_nested_path() -> None:
    config = f.config()
    config["pools"][0]["taints"] = [{"key": "dedicated", "efect": "NoSchedule"}]
    issues = spec_issues(config)
    assert (
        message_at(issues, f"pools[{H100}].taints[0].efect")
        == "unknown field 'efect'; did you mean 'effect'?"
    )


def test_unknown_field_in_a_placement() -> None:
    serving = f.serving()
    serving["placements"][0]["replica"] = 2
    issues = spec_issues(f.config(), serving)
    # One mistake, one issue: not also "placements should have at least 1 item".
    assert issues == [
        Issue("servings[chat].placements[0].replica", "unknown field 'replica'; did you mean 'replicas'?")
    ]


def test_unknown_field_without_a_close_match_lists_the_fields() -> None:
    serving = f.serving()
    serving["placements"][0]["zzz"] = 2
    [issue] = spec_issues(f.config(), serving)
    assert issue.message.startswith("unknown field 'zzz'; expected one of: parallelism, pool, region,")


def test_a_model_source_typo_is_one_issue_at_the_source() -> None:
    source = {"uri": "s3://models/acme-13b", "params_b": 13, "dtyp": "bfloat16"}
    issues = spec_issues(f.config(), f.serving(model=source))
    assert issues == [Issue("servings[chat].model.dtyp", "unknown field 'dtyp'; did you mean 'dtype'?")]


def test_a_model_of_the_wrong_type_is_one_issue() -> None:
    [issue] = spec_issues(f.config(), f.serving(model=42))
    assert issue.path == "servings[chat].model"
    assert issue.message.startswith("Input should be a valid string, or ")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("q", "must be 2-63 characters, got 1", id="too-short"),
        pytest.param("Qwen-Chat", "is not a DNS-1123 label", id="upper-case"),
        pytest.param("q" * 64, "must be 2-63 characters, got 64", id="64-chars"),
        pytest.param("qwen_chat", "is not a DNS-1123 label", id="underscore"),
        pytest.param("-qwen", "is not a DNS-1123 label", id="leading-dash"),
    ],
)
def test_serving_name_must_be_a_dns_label(name: str, expected: str) -> None:
    issues = spec_issues(f.config(), f.serving(name))
    assert expected in message_at(issues, f"servings[{name}].name")


@pytest.mark.parametrize("name", ["qw", "qwen2-5-7b", "q" * 44])
def test_serving_name_at_the_limits_is_accepted(name: str) -> None:
    assert f.fleet(f.config(), f.serving(name)).servings[0].name == name


def test_serving_and_pool_names_together_must_fit_an_object_name() -> None:
    name = "q" * 45  # 45 + "-" + 18 characters of pool name = 64
    issues = spec_issues(f.config(), f.serving(name))
    message = message_at(issues, f"servings[{name}].placements[0]")
    assert f"object name '{name}-{H100}' is over 63 characters" in message


def test_unknown_pool() -> None:
    issues = spec_issues(f.config(), f.serving(pool="sh-h200"))
    assert message_at(issues, "servings[chat].placements[0].pool") == "unknown pool 'sh-h200'"


def test_pool_in_another_region() -> None:
    config = f.config(
        regions=[f.region(), f.region("cn-south")],
        pools=[f.nvidia_h100_80g_x8.pool(), f.ascend_910b3_x8.pool(region="cn-south")],
    )
    issues = spec_issues(config, f.serving(pool=f.ascend_910b3_x8.pool_name))
    message = message_at(issues, "servings[chat].placements[0].pool")
    assert "is in region 'cn-south', not 'cn-east'" in message


def test_unknown_region_in_a_placement() -> None:
    issues = spec_issues(f.config(), f.serving(region="eu-west"))
    assert message_at(issues, "servings[chat].placements[0].region") == "unknown region 'eu-west'"


def test_same_pool_placed_twice() -> None:
    serving = f.serving()
    serving["placements"].append({"region": f.REGION, "pool": H100})
    issues = spec_issues(f.config(), serving)
    assert "placed twice" in message_at(issues, "servings[chat].placements[1].pool")


def test_duplicate_serving_names() -> None:
    issues = spec_issues(f.config(), f.serving(), f.serving(model="qwen3-8b"))
    assert "duplicate serving 'chat'" in message_at(issues, "servings[chat].name")


def test_duplicate_pool_names() -> None:
    pools = [f.nvidia_h100_80g_x8.pool(), f.nvidia_h100_80g_x8.pool(nodes=1)]
    issues = spec_issues(f.config(pools=pools))
    assert message_at(issues, f"pools[{H100}].name") == f"duplicate name '{H100}'"


def test_unknown_template() -> None:
    issues = spec_issues(f.config(), f.serving(template="trtllm"))
    assert message_at(issues, "servings[chat].template") == "unknown deploy template 'trtllm'"


def test_unknown_model_lists_the_catalog() -> None:
    issues = spec_issues(f.config(), f.serving(model="gpt-5"))
    message = message_at(issues, "servings[chat].model")
    assert message.startswith("unknown model 'gpt-5'")
    assert "qwen2.5-7b-instruct" in message


def test_model_outside_the_catalog_with_a_source_is_accepted() -> None:
    source = {"uri": "s3://models/acme-13b", "params_b": 13, "dtype": "bfloat16"}
    fleet = f.fleet(f.config(), f.serving(model=source))
    assert fleet.models["chat"].id == "acme-13b"


def test_model_source_with_bad_uri_is_reported_under_model() -> None:
    source = {"uri": "ftp://models/acme-13b", "params_b": 13, "dtype": "bfloat16"}
    issues = spec_issues(f.config(), f.serving(model=source))
    assert "is not a model source" in message_at(issues, "servings[chat].model.uri")


def test_unknown_vendor() -> None:
    pools = [f.nvidia_h100_80g_x8.pool(accelerator="intel/gaudi3")]
    issues = spec_issues(f.config(pools=pools))
    message = message_at(issues, f"pools[{H100}].accelerator")
    assert message.startswith("unknown vendor 'intel'")
    assert "ascend" in message and "nvidia" in message


def test_unknown_accelerator_needs_family_and_memory() -> None:
    pools = [f.nvidia_h100_80g_x8.pool(accelerator="nvidia/rtx-5090")]
    issues = spec_issues(f.config(pools=pools))
    message = message_at(issues, f"pools[{H100}].accelerator")
    assert "'nvidia/rtx-5090' is not in the NVIDIA catalog" in message
    assert "set family and memory_per_device_gib" in message


def test_unknown_accelerator_with_family_and_memory_is_accepted() -> None:
    pool = f.nvidia_h100_80g_x8.pool(
        accelerator="nvidia/rtx-5090", family="blackwell", memory_per_device_gib=32
    )
    facts = f.fleet(f.config(pools=[pool])).pools[H100]
    assert (facts.family, facts.memory_per_device_gib) == ("blackwell", 32)


def test_a3_nodes_with_odd_devices_per_node_are_refused() -> None:
    pool = f.ascend_910c_x16.pool(devices_per_node=7)
    issues = spec_issues(f.config(pools=[pool]))
    message = message_at(issues, f"pools[{f.ascend_910c_x16.pool_name}].devices_per_node")
    assert "a3 devices are allocated in pairs" in message


def test_odd_devices_per_node_are_fine_on_910b() -> None:
    pool = f.ascend_910b3_x8.pool(devices_per_node=7)
    assert f.fleet(f.config(pools=[pool])).pools[f.ascend_910b3_x8.pool_name].family == "910b"


def test_autoscaling_min_greater_than_max() -> None:
    serving = f.serving(autoscaling={"min_replicas": 3, "max_replicas": 2})
    issues = spec_issues(f.config(), serving)
    message = message_at(issues, "servings[chat].autoscaling")
    assert message == "min_replicas (3) is greater than max_replicas (2)"


def test_replicas_outside_autoscaling_bounds() -> None:
    serving = f.serving(replicas=5, autoscaling={"min_replicas": 1, "max_replicas": 3})
    issues = spec_issues(f.config(), serving)
    message = message_at(issues, "servings[chat].placements[0].replicas")
    assert message == "5 is outside autoscaling bounds [1, 3]"


def test_autoscaling_in_a_region_without_keda() -> None:
    config = f.config(regions=[f.region(keda=False, prometheus_url="http://prom:9090")])
    serving = f.serving(autoscaling={"min_replicas": 1, "max_replicas": 2})
    issues = spec_issues(config, serving)
    assert "has no KEDA" in message_at(issues, "servings[chat].autoscaling")


def test_autoscaling_needs_a_prometheus_to_query() -> None:
    config = f.config(regions=[f.region(prometheus_url=None)])
    serving = f.serving(autoscaling={"min_replicas": 1, "max_replicas": 2})
    issues = spec_issues(config, serving)
    assert "sets no prometheus_url" in message_at(issues, "servings[chat].autoscaling")


def test_region_without_kubeconfig_or_context() -> None:
    region = f.region()
    region["cluster"] = {"cluster_identifier": "cn-east-1"}
    issues = spec_issues(f.config(regions=[region]))
    message = message_at(issues, f"regions[{f.REGION}].cluster")
    assert "set kubeconfig_secret" in message and "or context" in message


def test_region_reached_through_a_context_is_accepted() -> None:
    region = f.region(cluster={"context": "admin@cn-east", "cluster_identifier": "cn-east-1"})
    assert f.fleet(f.config(regions=[region])).regions[f.REGION].cluster.context == "admin@cn-east"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({"cluster": None}, "cluster: required for a kubernetes region", id="no-cluster"),
        pytest.param(
            {"runtime": "local"}, "cluster: a local region runs on this machine", id="local-with-cluster"
        ),
        pytest.param(
            {"local": {"engines": "simulate"}}, "local: only for regions with runtime: local", id="k8s"
        ),
    ],
)
def test_region_runtime_needs(overrides: dict[str, Any], expected: str) -> None:
    region = {k: v for k, v in {**f.region(), **overrides}.items() if v is not None}
    issues = spec_issues(f.config(regions=[region]))
    assert expected in message_at(issues, f"regions[{f.REGION}]")


def test_local_region_needs_no_cluster_and_renders_no_kubernetes_objects() -> None:
    region = f.region(runtime="local", local={"engines": "simulate"})
    del region["cluster"]
    fleet = f.fleet(f.config(regions=[region]), f.serving())
    assert fleet.regions[f.REGION].local is not None
    assert fleet.regions[f.REGION].local.engines == "simulate"
    rendering = render_fleet(fleet)
    [placed] = rendering.placements
    assert placed.objects == () and rendering.namespaces == {}
    assert placed.launch.roles["single"].command  # the launch the local runtime runs is rendered


def test_custom_engine_without_runtime() -> None:
    templates = [f.template("tei", engine="custom", engine_version="1.0", entrypoint=["tei"])]
    issues = spec_issues(f.config(templates=templates))
    assert "custom engines need runtime" in message_at(issues, "templates[tei]")


def test_builtin_engine_cannot_skip_flag_validation() -> None:
    issues = spec_issues(f.config(templates=[f.template(validate_flags=False)]))
    assert message_at(issues, "templates[vllm]") == "vllm flags are always validated"


def test_stack_without_regions() -> None:
    issues = spec_issues(f.config(regions=[], pools=[]))
    assert message_at(issues, "regions") == "a stack needs at least one region"


def test_several_errors_are_reported_together() -> None:
    config = f.config(pools=[f.nvidia_h100_80g_x8.pool(), f.ascend_910c_x16.pool(devices_per_node=3)])
    broken = [
        f.serving("aa", pool="nowhere"),
        f.serving("bb", template="missing"),
        f.serving("cc", model="gpt-5"),
    ]
    issues = spec_issues(config, *broken)
    assert {i.path for i in issues} == {
        f"pools[{f.ascend_910c_x16.pool_name}].devices_per_node",
        "servings[aa].placements[0].pool",
        "servings[bb].template",
        "servings[cc].model",
    }


def test_a_broken_pool_is_reported_once_not_again_where_it_is_used() -> None:
    config = f.config()
    config["pools"][0]["devices_per_node"] = 0
    issues = spec_issues(config, f.serving())
    assert [i.path for i in issues] == [f"pools[{H100}].devices_per_node"]


def test_spec_error_text_names_every_path() -> None:
    with pytest.raises(SpecError) as caught:
        f.fleet(f.config(), f.serving("aa", pool="nowhere"), f.serving("bb", template="missing"))
    text = str(caught.value)
    assert "servings[aa].placements[0].pool: unknown pool 'nowhere'" in text
    assert "servings[bb].template: unknown deploy template 'missing'" in text


# ----------------------------------------------------------------------------------------- loader


def write_stack(root: Path, config: dict[str, Any], servings: dict[str, str]) -> Path:
    """A stacks/ folder with `Pulumi.test.yaml` and one file per serving (raw YAML text)."""
    namespaced = {f"modelfleet:{key}": value for key, value in config.items()}
    namespaced["kubernetes:enableServerSideApply"] = "true"
    (root / "Pulumi.test.yaml").write_text(yaml.safe_dump({"config": namespaced}), "utf-8")
    folder = root / "test" / "servings"
    folder.mkdir(parents=True)
    for file, text in servings.items():
        (folder / file).write_text(text, "utf-8")
    return root


def test_loader_reads_a_stack_from_disk(tmp_path: Path) -> None:
    write_stack(tmp_path, f.config(), {"chat.yaml": yaml.safe_dump(f.serving())})
    fleet = load_fleet(tmp_path, "test")
    assert [s.name for s in fleet.servings] == ["chat"]


def test_serving_file_name_must_match_its_name(tmp_path: Path) -> None:
    write_stack(tmp_path, f.config(), {"qwen.yaml": yaml.safe_dump(f.serving("chat"))})
    with pytest.raises(SpecError) as caught:
        read_servings(tmp_path, "test")
    message = message_at(list(caught.value.issues), "servings[qwen].name")
    assert message == "must be 'qwen', the file name (got 'chat')"


def test_invalid_yaml_reports_line_and_column(tmp_path: Path) -> None:
    text = "name: chat\nplacements:\n  - {region: cn-east, pool: [\n"
    write_stack(tmp_path, f.config(), {"chat.yaml": text})
    with pytest.raises(SpecError) as caught:
        read_servings(tmp_path, "test")
    message = message_at(list(caught.value.issues), "servings[chat]")
    assert "chat.yaml is not valid YAML (line 4, column 1)" in message


def test_unknown_modelfleet_config_key(tmp_path: Path) -> None:
    config = {**f.config(), "pool": []}
    write_stack(tmp_path, config, {})
    with pytest.raises(SpecError) as caught:
        stack_config(tmp_path, "test")
    message = message_at(list(caught.value.issues), "config.modelfleet:pool")
    assert "unknown setting" in message and "pools" in message


def test_secret_config_values_are_not_sections(tmp_path: Path) -> None:
    config = {**f.config(), "kubeconfig-cn-east": {"secure": "AAABAxyz"}}
    write_stack(tmp_path, config, {})
    assert set(stack_config(tmp_path, "test")) == {"platform", "regions", "pools", "templates"}


def test_missing_stack_lists_the_stacks_there_are(tmp_path: Path) -> None:
    write_stack(tmp_path, f.config(), {})
    with pytest.raises(SpecError, match=r"no stack 'prod' .*\(have: test\)"):
        stack_config(tmp_path, "prod")


@pytest.mark.parametrize(
    ("hw", "resource"),
    [
        pytest.param(f.nvidia_h100_80g_x8, "nvidia.com/gpu", id="nvidia_h100_80g_x8"),
        pytest.param(f.nvidia_l20_x8_hami, "nvidia.com/gpu", id="nvidia_l20_x8_hami"),
        pytest.param(f.ascend_910c_x16, "huawei.com/Ascend910", id="ascend_910c_x16"),
        pytest.param(f.ascend_310p_x4, "huawei.com/Ascend310P", id="ascend_310p_x4"),
        pytest.param(f.metax_c500_x8, "metax-tech.com/gpu", id="metax_c500_x8"),
        pytest.param(f.biren_br166_x8, "birentech.com/gpu", id="biren_br166_x8"),
        pytest.param(f.amd_mi300x_x8, "amd.com/gpu", id="amd_mi300x_x8"),
        pytest.param(f.hygon_k100_x8, "hygon.com/dcu", id="hygon_k100_x8"),
        pytest.param(f.cambricon_mlu590_x8, "cambricon.com/mlu", id="cambricon_mlu590_x8"),
    ],
)
def test_pool_resource_name_defaults_to_the_device_plugins(hw: f.Hardware, resource: str) -> None:
    assert f.fleet(f.config(pools=[hw.pool()])).pools[hw.pool_name].resource_name == resource


def test_pool_resource_name_override_wins() -> None:
    # Huawei Cloud CCE advertises 910B as huawei.com/ascend-1980; the pool says so.
    pool = f.ascend_910b3_x8.pool()
    assert f.fleet(f.config(pools=[pool])).pools[pool["name"]].resource_name == "huawei.com/ascend-1980"
