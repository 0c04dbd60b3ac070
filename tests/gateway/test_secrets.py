"""Secret references of MaaS targets resolve only inside the operator's namespace: an environment
prefix and a secrets directory, never the server's own settings — also for a row written straight
into the database, past the portal's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import secrets
from gateway.settings import GatewaySettings


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "upstream").write_text("file-secret\n")
    (tmp_path / "pepper").write_text("the-pepper\n")
    (tmp_path / "secrets" / "escape").symlink_to(tmp_path / "pepper")
    return GatewaySettings(data_dir=tmp_path, maas_secrets_dir=tmp_path / "secrets")


def test_references_inside_the_namespace_resolve(
    settings: GatewaySettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAS_SECRET_OPENAI", "env-secret")
    assert secrets.resolve("env:MAAS_SECRET_OPENAI", settings) == "env-secret"
    assert secrets.resolve(f"file:{tmp_path}/secrets/upstream", settings) == "file-secret"


@pytest.mark.parametrize(
    "ref",
    [
        "env:MODELFLEET_PEPPER",
        "env:MODELFLEET_DATABASE_URL",
        "env:HOME",
        "file:{tmp}/pepper",
        "file:{tmp}/secrets/../pepper",
        "file:{tmp}/secrets/escape",
        "file:/etc/hostname",
        "vault:anything",
    ],
)
def test_references_outside_it_resolve_to_nothing(
    settings: GatewaySettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: str
) -> None:
    monkeypatch.setenv("MODELFLEET_PEPPER", "the-pepper")
    monkeypatch.setenv("MODELFLEET_DATABASE_URL", "postgresql://secret@db/x")
    assert secrets.resolve(ref.format(tmp=tmp_path), settings) is None
    assert secrets.problem(ref.format(tmp=tmp_path), settings) is not None


def test_settings_stay_out_whatever_the_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELFLEET_PEPPER", "the-pepper")
    wide = GatewaySettings(data_dir=tmp_path, maas_secret_env_prefix="MODELFLEET_")
    assert secrets.resolve("env:MODELFLEET_PEPPER", wide) is None


def test_without_a_secrets_directory_no_file_resolves(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("x")
    assert secrets.resolve(f"file:{tmp_path}/key", GatewaySettings(data_dir=tmp_path)) is None
