"""The audit API and CLI: filters, paging newest first, who sees which rows, a CSV export whose
hash chain re-verifies from the file alone, and tamper detection (changed and deleted rows)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from portal.audit import CSV_COLUMNS, GENESIS, legacy_hash, row_hash
from portal.audit_keys import AuditKeys, load_audit_keys
from portal.services import Services
from portal.settings import Settings
from tests.portal.helpers import as_user, make_member


def _setup(client: TestClient) -> dict[str, str]:
    for slug in ("team-a", "team-b"):
        assert client.post("/api/workspaces", json={"slug": slug, "name": slug}).status_code == 201
    tokens = {
        "alice": make_member(client, "alice", "team-a", "member"),
        "carol": make_member(client, "carol", "team-a", "admin"),
        "dave": make_member(client, "dave", "team-b", "member"),
    }
    with as_user(client, tokens["alice"]):
        client.post(
            "/api/workspaces/team-a/api-keys",
            json={"name": "alice-key"},
            headers={"X-Request-ID": "req-alice-1"},
        )
    with as_user(client, tokens["dave"]):
        client.post("/api/workspaces/team-b/api-keys", json={"name": "dave-key"})
    return tokens


def _items(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/audit", params={"page_size": 500, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_filters_and_paging_newest_first(client: TestClient) -> None:
    _setup(client)
    everything = _items(client)
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True) and len(ids) == ids[0]
    page2 = client.get("/api/audit", params={"page": 2, "page_size": 3}).json()
    assert [e["id"] for e in page2["items"]] == ids[3:6] and page2["total"] == len(ids)

    keys = _items(client, action="CreateWSAPIKey")
    assert [e["actor"] for e in keys] == ["dave", "alice"]
    both = _items(client, action=["CreateWSAPIKey", "CreateWorkspace"])
    assert {e["action"] for e in both} == {"CreateWSAPIKey", "CreateWorkspace"} and len(both) == 4
    daves = _items(client, actor="dave")
    assert {e["actor"] for e in daves} == {"dave"} and {e["action"] for e in daves} == {
        "Login",
        "CreateWSAPIKey",
    }
    assert {e["workspace"] for e in _items(client, workspace="team-b")} == {"team-b"}
    assert {e["resource_type"] for e in _items(client, resource_type="Workspace")} == {"Workspace"}
    assert [e["action"] for e in _items(client, resource_id="team-a", resource_type="Workspace")] == [
        "CreateWorkspace"
    ]
    by_request = _items(client, request_id="req-alice-1")  # her sign-in and the key, one request
    assert [(e["actor"], e["action"]) for e in by_request] == [
        ("alice", "CreateWSAPIKey"),
        ("alice", "Login"),
    ]
    assert _items(client, result="failure") == []
    assert client.get("/api/audit", params={"result": "maybe"}).status_code == 422

    newest = everything[0]["at"]
    assert _items(client, since=(datetime.fromisoformat(newest) + timedelta(seconds=1)).isoformat()) == []
    assert len(_items(client, until=(datetime.now(UTC) + timedelta(minutes=1)).isoformat())) == len(ids)
    # Bounds without an offset are UTC.
    naive_past = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert len(_items(client, since=naive_past)) == len(ids)


def test_who_sees_which_rows(client: TestClient) -> None:
    tokens = _setup(client)
    with as_user(client, tokens["alice"]):  # a plain member: only what she did herself
        mine = _items(client)
        assert mine and {e["actor"] for e in mine} == {"alice"}
        assert _items(client, workspace="team-a") == [e for e in mine if e["workspace"] == "team-a"]
        assert client.get("/api/audit", params={"workspace": "team-b"}).status_code == 404
        assert client.get("/api/audit/verify").status_code == 403
        exported = list(csv.DictReader(io.StringIO(client.get("/api/audit/export.csv").text)))
        assert {r["actor"] for r in exported} == {"alice"}
    with as_user(client, tokens["carol"]):  # a workspace admin: the workspace's rows and her own
        rows = _items(client)
        assert {e["workspace"] for e in rows if e["actor"] != "carol"} == {"team-a"}
        assert any(e["actor"] == "alice" for e in rows) and not any(e["actor"] == "dave" for e in rows)
        assert client.get("/api/audit", params={"workspace": "team-b"}).status_code == 404
    assert any(e["actor"] == "dave" for e in _items(client))  # platform admins see everything


def _verify_csv(body: str, keys: AuditKeys) -> int:
    """Re-check the chain from an exported file and the audit keys; returns the number of rows."""
    reader = csv.reader(io.StringIO(body))
    assert tuple(next(reader)) == CSV_COLUMNS
    prev, count = GENESIS, 0
    for row in reader:
        fields: dict[str, Any] = dict(zip(CSV_COLUMNS, row, strict=True))
        fields["id"] = int(fields["id"])
        for name in ("before", "after"):
            fields[name] = json.loads(fields[name]) if fields[name] else None
        for name in ("workspace", "request_id"):
            fields[name] = fields[name] or None
        assert fields["prev_hash"] == prev
        assert row_hash(keys, fields["key_id"], prev, fields) == fields["hash"], fields["id"]
        prev, count = fields["hash"], count + 1
    return count


def test_csv_export_streams_the_filtered_rows_in_chain_order(client: TestClient, settings: Settings) -> None:
    _setup(client)
    export = client.get("/api/audit/export.csv")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    assert _verify_csv(export.text, load_audit_keys(settings)) == len(_items(client))
    filtered = list(
        csv.DictReader(
            io.StringIO(client.get("/api/audit/export.csv", params={"action": "CreateWSAPIKey"}).text)
        )
    )
    assert [r["actor"] for r in filtered] == ["alice", "dave"]
    assert json.loads(filtered[0]["after"])["name"] == "alice-key"


def _tamper_after(services: Services, row_id: int) -> None:
    value = json.dumps({"slug": "team-a", "name": "rewritten"})
    cast = "CAST(:v AS JSONB)" if services.engine.dialect.name == "postgresql" else ":v"
    with services.engine.begin() as c:
        changed = c.execute(
            text(f'UPDATE audit_events SET "after" = {cast} WHERE id = :id'), {"v": value, "id": row_id}
        )
        assert changed.rowcount == 1


def _delete_row(services: Services, row_id: int) -> None:
    with services.engine.begin() as c:
        assert c.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": row_id}).rowcount == 1


def _workspace_row(client: TestClient) -> int:
    return int(_items(client, action="CreateWorkspace", resource_id="team-a")[0]["id"])


def test_api_verify_reports_changed_and_removed_rows(client: TestClient, services: Services) -> None:
    _setup(client)
    intact = client.get("/api/audit/verify").json()
    assert intact["ok"] is True and intact["checked"] == len(_items(client)) and intact["broken_at"] is None
    row = _workspace_row(client)
    _tamper_after(services, row)
    broken = client.get("/api/audit/verify").json()
    assert broken == {
        "ok": False,
        "checked": row - 1,
        "broken_at": row,
        "reason": "row content does not match its hash",
        "sealed_through": None,
    }


def test_api_verify_reports_a_truncated_tail(client: TestClient, services: Services) -> None:
    _setup(client)
    last = _items(client)[0]["id"]
    _delete_row(services, last)
    report = client.get("/api/audit/verify").json()
    assert report["ok"] is False and report["broken_at"] == last and "removed" in report["reason"]


def _rows(services: Services) -> list[dict[str, Any]]:
    with services.engine.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(text("SELECT * FROM audit_events ORDER BY id"))]
    for row in rows:  # SQLite gives text back where PostgreSQL gives values
        if isinstance(row["at"], str):
            row["at"] = datetime.fromisoformat(row["at"])
        for name in ("before", "after"):
            if isinstance(row[name], str):
                row[name] = json.loads(row[name])
    return rows


def _fields_of(row: dict[str, Any]) -> dict[str, Any]:
    at = row["at"] if row["at"].tzinfo else row["at"].replace(tzinfo=UTC)
    return {**row, "at": at.astimezone(UTC).isoformat(timespec="microseconds")}


def _rewrite(services: Services, rows: list[dict[str, Any]], head: tuple[int, str] | None = None) -> None:
    json_cast = "CAST(:after AS JSONB)" if services.engine.dialect.name == "postgresql" else ":after"
    with services.engine.begin() as c:
        for row in rows:
            c.execute(
                text(
                    f'UPDATE audit_events SET "after" = {json_cast}, key_id = :key_id, '
                    "prev_hash = :prev_hash, hash = :hash WHERE id = :id"
                ),
                {**row, "after": json.dumps(row["after"]) if row["after"] is not None else None},
            )
        last_id, last_hash = head or (rows[-1]["id"], rows[-1]["hash"])
        c.execute(text("UPDATE audit_head SET last_id = :i, last_hash = :h"), {"i": last_id, "h": last_hash})


@pytest.mark.parametrize("how", ["unkeyed", "guessed key"])
def test_a_rewritten_and_rehashed_chain_is_detected(client: TestClient, services: Services, how: str) -> None:
    """An attacker who can write the database rewrites a row and rehashes every row after it with the
    project's own hash functions: without the key (plain SHA-256 as before keys existed, or a key of
    their own under the portal's key id), verification fails."""
    _setup(client)
    assert client.get("/api/audit/verify").json()["ok"] is True
    forged = AuditKeys("1", {"1": b"the attacker's guess"})
    rows, prev = _rows(services), GENESIS
    for row in rows:
        if row["action"] == "CreateWorkspace":
            row["after"] = {**(row["after"] or {}), "name": "rewritten"}
        row["prev_hash"] = prev
        if how == "unkeyed":
            row["key_id"], row["hash"] = None, legacy_hash(prev, _fields_of(row))
        else:
            row["hash"] = row_hash(forged, "1", prev, _fields_of(row))
        prev = row["hash"]
    _rewrite(services, rows)
    report = client.get("/api/audit/verify").json()
    assert report["ok"] is False
    if how == "unkeyed":  # an all-unkeyed chain links up; the signed checkpoint does not match it
        assert "the chain was rewritten" in report["reason"], report
    else:
        assert report["broken_at"] == 1 and report["reason"] == "row content does not match its hash"


def test_a_truncated_tail_with_the_head_moved_back_is_detected(
    client: TestClient, services: Services
) -> None:
    """Delete the newest rows and move the head back to the row before them: the chain links up, but
    the newest signed checkpoint saw the removed rows."""
    _setup(client)
    sealed = client.get("/api/audit/verify").json()  # verification writes a checkpoint
    assert sealed["ok"] is True
    rows = _rows(services)
    keep = rows[:-2]
    with services.engine.begin() as c:
        c.execute(text("DELETE FROM audit_events WHERE id > :id"), {"id": keep[-1]["id"]})
    _rewrite(services, keep)
    report = client.get("/api/audit/verify").json()
    assert report["ok"] is False and report["broken_at"] == keep[-1]["id"] + 1
    assert f"saw row {rows[-1]['id']}" in report["reason"], report
    # A restart writes a checkpoint at the shortened head; the older one still holds the cut rows.
    from portal.app import build_services, create_app

    restarted = build_services(services.settings)
    try:
        with TestClient(create_app(services=restarted)) as again:
            again.headers["Authorization"] = client.headers["Authorization"]
            after_restart = again.get("/api/audit/verify").json()
    finally:
        restarted.engine.dispose()
    assert after_restart["ok"] is False and f"saw row {rows[-1]['id']}" in after_restart["reason"]


def test_refusals_are_audited_with_their_reason(client: TestClient) -> None:
    tokens = _setup(client)
    with as_user(client, tokens["alice"]):  # a member may not create a workspace
        denied = client.post("/api/workspaces", json={"slug": "team-x", "name": "x"})
        assert denied.status_code == 403
        invalid = client.post("/api/workspaces/team-a/api-keys", json={"name": ""})
        assert invalid.status_code == 422
    conflict = client.post("/api/workspaces", json={"slug": "team-a", "name": "again"})
    assert conflict.status_code == 409
    refused = _items(client, result="failure")
    by_status = {e["after"]["status"]: e for e in refused}
    assert set(by_status) >= {403, 409, 422}, refused
    assert by_status[403]["actor"] == "alice" and by_status[403]["action"] == "Denied"
    assert "platform admin" in by_status[403]["detail"]
    assert by_status[422]["workspace"] == "team-a" and by_status[422]["action"] == "Invalid"
    assert by_status[409]["action"] == "Refused" and by_status[409]["resource_id"] == "POST /api/workspaces"
    assert client.get("/api/audit/verify").json()["ok"] is True


def test_rotated_keys_verify_old_and_new_rows(
    client: TestClient, services: Services, settings: Settings, admin_token: str
) -> None:
    from portal.app import build_services, create_app
    from portal.audit_keys import rotate

    _setup(client)
    assert rotate(settings) == "2"
    rotated = build_services(settings)
    try:
        with TestClient(create_app(services=rotated)) as again:
            again.headers["Authorization"] = f"Bearer {admin_token}"
            assert again.post("/api/workspaces", json={"slug": "team-c", "name": "c"}).status_code == 201
            assert again.get("/api/audit/verify").json()["ok"] is True
    finally:
        rotated.engine.dispose()
    key_ids = {row["key_id"] for row in _rows(services)}
    assert key_ids == {"1", "2"}


@pytest.mark.parametrize("tamper", ["change", "delete"])
def test_cli_verify_audit_detects_tampering(
    client: TestClient, services: Services, settings: Settings, tamper: str
) -> None:
    _setup(client)
    env = {
        **os.environ,
        "MODELFLEET_DATABASE_URL": settings.resolved_database_url,
        "MODELFLEET_DATA_DIR": str(settings.data_dir),
        "COLUMNS": "200",
    }

    def verify_audit() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "portal", "verify-audit"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    row = _workspace_row(client)
    if tamper == "change":
        ok = verify_audit()
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "intact" in ok.stdout
        _tamper_after(services, row)
    else:
        _delete_row(services, row)
    broken = verify_audit()
    assert broken.returncode == 1, broken.stdout + broken.stderr
    said = " ".join(broken.stdout.split())
    assert f"broken at row {row}" in said
    assert ("does not match its hash" if tamper == "change" else f"row {row} is missing") in said


def test_out_of_range_times_are_invalid_not_errors(client: TestClient) -> None:
    for name, value in (("since", "0001-01-01T00:00:00+01:00"), ("until", "9999-12-31T23:59:59-01:00")):
        response = client.get("/api/audit", params={name: value})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["fields"][0]["field"] == name
