"""Plain secrets found by name and by value, on the command line and in env (fleet.secrets), and the
`no-plain-secrets` rule over rendered objects using the same detection."""

from __future__ import annotations

import pytest

from fleet import secrets
from fleet.rules.resource import no_plain_secrets

TOKENS = {
    "openai": "sk-proj-0123456789abcdefghij",
    "huggingface": "hf_abcdefghijklmnopqrstuvwxyz0123456789",
    "github": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "aws": "AKIAABCDEFGHIJKLMNOP",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "url": "postgres://app:hunter2@db.internal:5432/app",
    "pem": "-----BEGIN RSA PRIVATE KEY-----",
}
HARMLESS = [
    "--max-num-batched-tokens",
    "8192",
    "--return-tokens-as-token-ids",
    "--tokenizer-mode",
    "auto",
    "/models/qwen3-8b",
    "https://hf-mirror.com",
    '{"ascend_compilation_config":{"enable_npugraph_ex":false}}',
    "--api-key",
    "$(VLLM_API_KEY)",
    "task-queue-sk-1",
]


@pytest.mark.parametrize("kind", sorted(TOKENS))
def test_credentials_are_found_by_their_shape(kind: str) -> None:
    assert secrets.secret_kind(TOKENS[kind]) is not None
    [message] = secrets.argv_secrets(["--chat-template", TOKENS[kind]])
    assert message.startswith("argument 2 looks like ")
    assert TOKENS[kind] not in message, "a message never repeats the secret"


def test_ordinary_arguments_are_not_secrets() -> None:
    assert secrets.argv_secrets(HARMLESS) == []


@pytest.mark.parametrize(
    "argv", [["--api-key", "letmein-123"], ["--api-key=letmein-123"], ["--hf-token", "x" * 12]]
)
def test_a_secret_flag_with_a_literal_value_is_refused_once(argv: list[str]) -> None:
    [message] = secrets.argv_secrets(argv)
    assert "has a plain value" in message and "secret_env" in message


def test_a_token_under_an_innocent_name_is_found_by_value() -> None:
    found = secrets.env_secrets({"DOWNLOAD_HELPER": TOKENS["huggingface"], "LOG_LEVEL": "info"})
    assert found == [("DOWNLOAD_HELPER", "holds what looks like a Hugging Face token (hf_...)")]


def test_a_secret_name_may_hold_a_kubelet_reference() -> None:
    assert secrets.env_secrets({"API_KEY": "$(OTHER_KEY)"}) == []


def test_scanning_a_megabyte_argument_stays_linear() -> None:
    """Patterns are anchored and bounded: no quadratic backtracking on a huge chat template."""
    assert secrets.argv_secrets(["--chat-template", "x" * 2_000_000 + "://" + "y" * 1000]) == []


def _deployment(env: list[dict[str, object]], args: list[str]) -> dict[str, object]:
    container = {"name": "engine", "image": "x", "env": env, "args": args}
    return {
        "kind": "Deployment",
        "metadata": {"name": "chat", "namespace": "modelfleet"},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def test_the_rule_finds_values_and_command_lines() -> None:
    obj = _deployment(
        [{"name": "HELPER", "value": TOKENS["openai"]}, {"name": "FINE", "value": "1"}],
        ["serve", "--api-key", "plain-key-123"],
    )
    messages = no_plain_secrets(obj, {"allowedNames": []})
    assert len(messages) == 2
    assert "env HELPER holds what looks like an API key (sk-...)" in messages[0]
    assert "command line: --api-key has a plain value" in messages[1]
    assert all(TOKENS["openai"] not in m and "plain-key-123" not in m for m in messages)
