"""The pack's wiring: `__main__.py` registers every policy `validators.py` defines, and the policies
mirror the rule table. `__main__.py` is only ever parsed: building a PolicyPack serves forever."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from fleet.rules import RULES
from policies import validators

POLICIES_DIR = Path(__file__).resolve().parents[2] / "policies"
CONSTRUCTORS = {"resource_policy", "stack_policy", "ResourceValidationPolicy", "StackValidationPolicy"}


def _defined_policies() -> list[str]:
    tree = ast.parse((POLICIES_DIR / "validators.py").read_text("utf-8"))
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if called in CONSTRUCTORS:
                names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def _listed_policies() -> list[str]:
    tree = ast.parse((POLICIES_DIR / "validators.py").read_text("utf-8"))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id == "POLICIES":
            assert isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.List)
            return [e.id for e in node.value.elts if isinstance(e, ast.Name)]
    raise AssertionError("validators.py defines no POLICIES list")


def test_validators_lists_every_policy_it_defines() -> None:
    defined = _defined_policies()
    assert len(defined) == len(RULES)
    assert sorted(_listed_policies()) == sorted(defined)
    assert [p.name for p in validators.POLICIES] == [getattr(validators, n).name for n in _listed_policies()]


def test_main_builds_the_pack_from_the_validators_list_and_nothing_else() -> None:
    tree = ast.parse((POLICIES_DIR / "__main__.py").read_text("utf-8"))
    imports = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "policies.validators"
        for alias in node.names
    }
    assert "POLICIES" in imports
    packs = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "PolicyPack"
    ]
    assert len(packs) == 1
    policies = next(k.value for k in packs[0].keywords if k.arg == "policies")
    assert isinstance(policies, ast.Name) and policies.id == "POLICIES"
    for stmt in tree.body:  # imports, the repository on sys.path, the pack: nothing else
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            continue
        assert isinstance(stmt, ast.Expr), ast.dump(stmt)
        if isinstance(stmt.value, ast.Constant) or stmt.value is packs[0]:
            continue
        assert isinstance(stmt.value, ast.Call) and ast.unparse(stmt.value.func) == "sys.path.insert"


def test_every_rule_is_a_policy_with_its_level_and_settings() -> None:
    by_name = {p.name: p for p in validators.POLICIES}
    assert set(by_name) == set(RULES)
    for name, rule in RULES.items():
        policy = by_name[name]
        assert policy.enforcement_level is not None and policy.enforcement_level.value == rule.level
        scope = "resource" if isinstance(policy, validators.ResourceValidationPolicy) else "stack"
        assert scope == rule.scope, name
        schema = policy.config_schema.properties if policy.config_schema else {}
        assert set(schema) == set(rule.settings)
        assert all("default" in prop for prop in schema.values()), name


def test_pulumi_policy_project_file() -> None:
    project = yaml.safe_load((POLICIES_DIR / "PulumiPolicy.yaml").read_text("utf-8"))
    assert project["runtime"]["name"] == "python"
    requirements = (POLICIES_DIR / "requirements.txt").read_text("utf-8")
    assert "pulumi-policy==" in requirements
