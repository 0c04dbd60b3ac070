"""Engine flags checked against the real argparse schemas in `fleet/data/engines/`."""

from __future__ import annotations

import pytest

from fleet.errors import FlagError
from fleet.flags import FlagSchema, available_versions, load_schema, validate_args

PATH = "servings[qwen].extra_args"
MODEL = "/models/qwen2.5-7b-instruct"


@pytest.fixture(scope="module")
def vllm() -> FlagSchema:
    return load_schema("vllm", "0.33.0")


@pytest.fixture(scope="module")
def vllm_0110() -> FlagSchema:
    return load_schema("vllm", "0.11.0")


@pytest.fixture(scope="module")
def sglang() -> FlagSchema:
    return load_schema("sglang", "0.5.23")


def messages(schema: FlagSchema, *argv: str) -> list[str]:
    issues = validate_args(schema, list(argv), PATH)
    assert all(i.path == PATH for i in issues)
    return [i.message for i in issues]


def test_a_typical_command_line_is_accepted(vllm: FlagSchema) -> None:
    argv = [MODEL, "--served-model-name", "qwen", "--host", "0.0.0.0", "--port", "8000"]
    argv += ["--tensor-parallel-size", "2", "--max-model-len", "32k", "--enable-prefix-caching"]
    assert messages(vllm, *argv) == []


def test_unknown_flag_suggests_the_closest(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--tensor-paralel-size", "2") == [
        "unknown flag --tensor-paralel-size for vllm 0.33.0; did you mean --tensor-parallel-size?"
    ]


def test_unknown_flag_far_from_any_has_no_suggestion(vllm: FlagSchema) -> None:
    [message] = messages(vllm, MODEL, "--frobnicate-the-widgets", "yes")
    assert message == "unknown flag --frobnicate-the-widgets for vllm 0.33.0"


def test_int_flag_rejects_a_word(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--tensor-parallel-size", "two") == [
        "--tensor-parallel-size expects int, got 'two'"
    ]


def test_float_flag_rejects_a_word(vllm: FlagSchema) -> None:
    [message] = messages(vllm, MODEL, "--gpu-memory-utilization", "most")
    assert message.startswith("--gpu-memory-utilization expects float")


def test_value_outside_choices(vllm: FlagSchema) -> None:
    [message] = messages(vllm, MODEL, "--dtype", "bf16")
    assert message.startswith("--dtype 'bf16' is not one of:")
    assert "bfloat16" in message


def test_boolean_flag_given_a_value(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--enforce-eager=true") == [
        "--enforce-eager is a boolean flag and takes no value (got 'true')"
    ]


def test_boolean_flag_followed_by_a_value_leaves_a_stray_value(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--enforce-eager", "true") == ["unexpected value 'true': no flag takes it"]


def test_missing_value(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--max-model-len", "--enforce-eager") == ["--max-model-len needs a value"]


def test_missing_value_at_the_end(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--port") == ["--port needs a value"]


def test_flag_given_twice(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--port", "8000", "--port", "8001") == ["--port is given more than once"]


def test_underscore_and_dash_spellings_of_one_flag_count_as_twice(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--max-model-len", "4096", "--max_model_len", "8192") == [
        "--max_model_len is given more than once"
    ]


def test_negated_boolean_optional_flag_is_accepted(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--no-enable-prefix-caching") == []


def test_negation_of_a_store_true_flag_is_unknown(vllm: FlagSchema) -> None:
    [message] = messages(vllm, MODEL, "--no-headless")
    assert message.startswith("unknown flag --no-headless")


def test_vllm_accepts_underscore_spelling(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--tensor_parallel_size", "2", "--max_model_len", "4096") == []


def test_sglang_does_not_accept_underscore_spelling(sglang: FlagSchema) -> None:
    [message] = messages(sglang, "--tp_size", "2")
    assert message.startswith("unknown flag --tp_size for sglang 0.5.23")


def test_kubernetes_variable_is_accepted_for_an_int_flag(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--node-rank", "$(LWS_WORKER_INDEX)", "--nnodes", "2") == []


def test_shell_variable_is_not_a_kubernetes_variable(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--node-rank", "${RANK}") == ["--node-rank expects int, got '${RANK}'"]


def test_json_flag_with_broken_json(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--compilation-config", "{bad") == [
        "--compilation-config expects valid JSON, got '{bad'"
    ]


def test_json_flag_with_valid_json(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--compilation-config", '{"level": 3}') == []


def test_human_readable_int(vllm: FlagSchema, vllm_0110: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--max-model-len", "32k") == []
    assert messages(vllm, MODEL, "--max-model-len", "auto") == []  # 0.33.0 only
    assert messages(vllm_0110, MODEL, "--max-model-len", "auto") == [
        "--max-model-len expects an integer such as 32768 or 32k, got 'auto'"
    ]


def test_second_positional_is_stray(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "/models/other") == ["unexpected value '/models/other': no flag takes it"]


def test_help_is_refused(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--help") == ["--help prints help and exits; remove it"]


def test_values_of_an_unknown_flag_are_not_reported_again(vllm: FlagSchema) -> None:
    assert len(messages(vllm, MODEL, "--max-lora-rnk", "64", "128")) == 1


def test_nargs_plus_takes_several_values(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--api-key", "k1", "k2") == []


def test_version_without_a_schema_lists_the_versions_we_have() -> None:
    with pytest.raises(FlagError) as caught:
        load_schema("vllm", "0.99.0")
    [issue] = caught.value.issues
    assert "no flag schema for vllm 0.99.0 (have: 0.11.0, 0.33.0)" in issue.message


def test_available_versions_match_the_data_files() -> None:
    assert available_versions("vllm") == ["0.11.0", "0.33.0"]
    assert available_versions("sglang") == ["0.5.23"]
    assert available_versions("trtllm") == []


def test_vllm_0110_has_no_native_multi_node(vllm_0110: FlagSchema) -> None:
    [message] = messages(vllm_0110, MODEL, "--nnodes", "2")
    assert message.startswith("unknown flag --nnodes for vllm 0.11.0")


def test_vllm_0330_has_native_multi_node(vllm: FlagSchema) -> None:
    assert messages(vllm, MODEL, "--nnodes", "2", "--node-rank", "1", "--headless") == []


def test_sglang_multi_node_flags(sglang: FlagSchema) -> None:
    argv = ["--model-path", MODEL, "--dist-init-addr", "$(LWS_LEADER_ADDRESS):20000"]
    argv += ["--nnodes", "2", "--node-rank", "$(LWS_WORKER_INDEX)"]
    assert messages(sglang, *argv) == []


def test_sglang_has_no_positional_model(sglang: FlagSchema) -> None:
    assert messages(sglang, MODEL) == [f"unexpected value {MODEL!r}: no flag takes it"]


def test_several_problems_are_all_reported(vllm: FlagSchema) -> None:
    found = messages(vllm, MODEL, "--dtype", "bf16", "--tensor-parallel-size", "x", "--port")
    assert len(found) == 3
