"""The layout is a contract: imports between our top-level packages match docs/architecture.md's table,
and `lint-imports` (run by `make test`) fails on a forbidden import."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fleet", "components", "policies", "store", "gateway", "console", "portal", "simulator")


def allowed_by_docs() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text[text.index("| package | what lives there | may import (ours) |") :]
    allowed: dict[str, set[str]] = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        allowed[cells[0].strip("`")] = set(re.findall(r"`([a-z_]+)`", cells[2]))
    return allowed


def test_imports_between_packages_are_those_the_architecture_table_allows() -> None:
    allowed = allowed_by_docs()
    assert set(allowed) == set(PACKAGES)
    graph = grimp.build_graph(*PACKAGES)
    drawn: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for importer in PACKAGES:
        for imported in PACKAGES:
            if importer != imported and graph.direct_import_exists(
                importer=importer, imported=imported, as_packages=True
            ):
                drawn[importer].add(imported)
    assert {p: drawn[p] - allowed[p] for p in PACKAGES} == {p: set() for p in PACKAGES}


def test_lint_imports_fails_on_a_forbidden_import(tmp_path: Path) -> None:
    """The real contracts over a tree where the data plane imports the portal and the core imports
    SQLAlchemy: both are caught, by name."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for contract in config["contracts"]:  # the submodules contracts name must exist
        for name in contract.get("forbidden_modules", []):
            head, _, rest = name.partition(".")
            if head in PACKAGES and rest:
                (tmp_path / head / f"{rest.replace('.', '/')}.py").write_text("")
    (tmp_path / "gateway" / "leak.py").write_text("import portal\n")
    (tmp_path / "fleet" / "orm.py").write_text("import sqlalchemy\n")
    lines = ["[importlinter]\nroot_packages =\n    " + "\n    ".join(config["root_packages"])]
    lines.append("include_external_packages = True")
    lines.append("exclude_type_checking_imports = True\n")
    for i, contract in enumerate(config["contracts"]):
        lines.append(f"[importlinter:contract:{i}]")
        for key, value in contract.items():
            rendered = "\n    ".join(value) if isinstance(value, list) else str(value)
            lines.append(f"{key} =\n    {rendered}" if isinstance(value, list) else f"{key} = {rendered}")
        lines.append("")
    (tmp_path / ".importlinter").write_text("\n".join(lines))
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None
    result = subprocess.run(
        [lint, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path)}
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert "gateway is not allowed to import portal" in result.stdout
    assert "fleet is not allowed to import sqlalchemy" in result.stdout
