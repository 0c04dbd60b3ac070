"""Deploy templates checked by the core, and the serving a template pre-fills.

A template is accepted only when the core would run it: the stack template exists (engine and
version come from it), every extra argument is a flag of that engine version, and on at least one
pool of the accelerator the model plans and renders. The check builds, for each matching pool, the
serving a user would get from the template (zero replicas, so it is the model's fit that is judged,
not today's free capacity) and runs `fleet.rules.preflight` over it against the stack at HEAD.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Literal

from fleet import catalog, kinds
from fleet.errors import FlagError, Issue, IssuesError
from fleet.flags import load_schema, validate_args
from fleet.planner import plan_placement
from fleet.rules.preflight import preflight, stack_data
from fleet.spec import DeployTemplate, ModelServing
from fleet.stack import PoolFacts, build_fleet
from portal.errors import FieldError, Invalid
from portal.messages import msg
from portal.plaza.schemas import DeployTemplateIn, PoolCheck, TemplateCheck
from portal.repository import StackSnapshot
from portal.services import Services
from portal.serving_models import ServingSpecIn
from store.models import ModelDeployTemplate, PlazaModel

CHECK_SERVING = "plaza-check"
# Which kinds of model each engine serves is the core's (fleet/data/engines.yaml `serves`,
# fleet/kinds.py; docs/ops-guide.md, "What serves each kind"): a plaza model's capabilities give its kind.

# Serving fields a template sets; a finding on one of them is the template's, on any pool.
# Policies that depend on who deploys, not on the template: reported, judged again at deploy time.
TENANCY_RULES = frozenset({"workspace-regions", "workspace-devices"})
TEMPLATE_FIELDS = (
    "max_model_len",
    "parallelism",
    "extra_args",
    "env",
    "gpu_memory_utilization",
    "quantization",
)


def snapshot(services: Services, stack: str) -> StackSnapshot:
    repo = services.repository
    if stack not in repo.stacks():
        raise Invalid.field("stack", f"no stack {stack!r} (have: {', '.join(repo.stacks()) or 'none'})")
    try:
        return repo.snapshot(stack)
    except IssuesError as exc:
        raise Invalid.field("stack", f"stack {stack!r} at HEAD is invalid: {exc.issues[0]}") from exc


def check_serves(model: PlazaModel, engine: str) -> None:
    """A model only an engine of another kind can serve (a diffusion model on vLLM) is refused on the
    template's `stack_template`, before any sizing: the planner would size it as a language model."""
    entry = catalog.engines().get(engine)
    capabilities = set(model.capabilities or ())
    if entry is None or not capabilities or kinds.kind_of(capabilities) in entry.serves:
        return
    raise Invalid.field(
        "stack_template",
        msg(
            "engine {engine} does not serve {capabilities}; {model!r} needs an engine of its kind",
            engine=engine,
            capabilities=", ".join(sorted(capabilities)),
            model=model.id,
        ),
    )


def model_reference(model: PlazaModel) -> str | dict[str, Any]:
    """What a serving's `model` says for this plaza model: its catalog id when the core can size it
    by name, else an explicit source with the facts the plaza holds."""
    if model.id in catalog.models():
        return model.id
    if model.source_uri and model.params_b:
        source: dict[str, Any] = {"uri": model.source_uri, "params_b": model.params_b, "dtype": model.dtype}
        if model.context_length:
            source["max_position_embeddings"] = model.context_length
        if model.capabilities and kinds.kind_of(model.capabilities) != "llm":
            # not sized as a language model, and only an engine of its kind serves it
            source["capabilities"] = list(model.capabilities)
        return source
    raise Invalid.field(
        "model",
        msg(
            "{model!r} is not in the core's sizing catalog; set its source_uri and params_b so the "
            "planner can size it",
            model=model.id,
        ),
    )


def sized_by(model: PlazaModel) -> Literal["catalog", "source", "unknown"]:
    if model.id in catalog.models():
        return "catalog"
    return "source" if model.source_uri and model.params_b else "unknown"


def _matches(pool: PoolFacts, accelerator: str) -> bool:
    return pool.spec.accelerator == accelerator if "/" in accelerator else pool.spec.vendor == accelerator


def matching_pools(snap: StackSnapshot, accelerator: str) -> list[PoolFacts]:
    vendor = accelerator.split("/", 1)[0]
    if vendor not in catalog.vendors():
        known = ", ".join(sorted(catalog.vendors()))
        raise Invalid.field(
            "accelerator", msg("unknown vendor {vendor!r} (known: {known})", vendor=vendor, known=known)
        )
    pools = [p for p in snap.fleet.pools.values() if _matches(p, accelerator)]
    if not pools:
        have = ", ".join(f"{p.name} ({p.spec.accelerator})" for p in snap.fleet.pools.values()) or "none"
        raise Invalid.field(
            "accelerator",
            msg(
                "stack {stack!r} has no {accelerator} pool (pools: {have})",
                stack=snap.stack,
                accelerator=accelerator,
                have=have,
            ),
        )
    return pools


def stack_template(snap: StackSnapshot, body: DeployTemplateIn) -> DeployTemplate:
    template = snap.fleet.templates.get(body.stack_template)
    if template is None:
        have = ", ".join(sorted(snap.fleet.templates)) or "none"
        raise Invalid.field(
            "stack_template", f"stack {snap.stack!r} has no template {body.stack_template!r} (have: {have})"
        )
    wrong = []
    if body.engine is not None and body.engine != template.engine:
        wrong.append(FieldError(field="engine", message=f"{template.name!r} runs {template.engine}"))
    if body.engine_version is not None and body.engine_version != template.engine_version:
        wrong.append(
            FieldError(
                field="engine_version",
                message=f"{template.name!r} pins {template.engine} {template.engine_version}",
            )
        )
    if wrong:
        raise Invalid(f"stack template {template.name!r} does not match: {wrong[0].message}", wrong)
    return template


def check_flags(template: DeployTemplate, extra_args: list[str]) -> None:
    """Each flag of `extra_args` against the engine's schema; the error names `extra_args[i]`."""
    if not extra_args or (template.engine == "custom" and not template.validate_flags):
        return
    try:
        schema = load_schema(template.engine, template.engine_version)
    except FlagError as exc:
        raise Invalid.field("stack_template", str(exc.issues[0])) from exc
    engine = catalog.engines().get(template.engine)
    platform = set(engine.platform_flags) if engine is not None else set()
    issues: list[Issue] = []
    starts = [i for i, token in enumerate(extra_args) if token.startswith("--")]
    if not starts or starts[0] != 0:
        issues.append(
            Issue("extra_args[0]", f"unexpected value {extra_args[0]!r}: arguments start with a --flag")
        )
    seen: dict[str, int] = {}
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(extra_args)
        where = f"extra_args[{start}]"
        flag = extra_args[start].partition("=")[0].replace("_", "-")
        if flag in seen:
            issues.append(Issue(where, f"{flag} is given more than once (also extra_args[{seen[flag]}])"))
        seen.setdefault(flag, start)
        if flag in platform:
            issues.append(
                Issue(where, f"{flag} is set by the platform from the template's fields; remove it")
            )
            continue
        issues += validate_args(schema, extra_args[start:end], where)
    if issues:
        fields = [FieldError(field=i.path, message=i.message) for i in issues]
        raise Invalid(f"{issues[0].path}: {issues[0].message}", fields)


def candidate(
    name: str, model: PlazaModel, body: DeployTemplateIn, pool: PoolFacts, replicas: int
) -> dict[str, Any]:
    """The serving (as a serving file holds it) that runs `model` from the template on `pool`."""
    serving: dict[str, Any] = {
        "name": name,
        "model": model_reference(model),
        "template": body.stack_template,
        "parallelism": body.parallelism
        if body.parallelism == "auto"
        else body.parallelism.model_dump(exclude_none=True),
        "placements": [{"region": pool.spec.region, "pool": pool.name, "replicas": replicas}],
    }
    spec = body.spec()
    for key in ("max_model_len", "gpu_memory_utilization", "quantization"):
        if spec.get(key) is not None:
            serving[key] = spec[key]
    if body.extra_args:
        serving["extra_args"] = list(body.extra_args)
    if body.env:
        serving["env"] = dict(body.env)
    return serving


def _field_of(subject: str) -> str:
    """Which template field a finding about the check serving is about."""
    prefix = f"servings[{CHECK_SERVING}]"
    if subject.startswith(prefix + "."):
        rest = re.sub(r"^placements\[0\]\.?", "", subject[len(prefix) + 1 :])
        head = re.split(r"[.\[]", rest, maxsplit=1)[0]
        if head in TEMPLATE_FIELDS:
            return rest
        if head == "model":
            return "model"
        if head == "template":
            return "stack_template"
    if subject.startswith("templates["):
        return "stack_template"
    return "accelerator"


def _clean(message: str, subject: str) -> str:
    return message.removeprefix(f"{subject}: ")


def _check_pool(
    snap: StackSnapshot, model: PlazaModel, body: DeployTemplateIn, pool: PoolFacts
) -> tuple[PoolCheck, list[FieldError]]:
    serving = candidate(CHECK_SERVING, model, body, pool, replicas=0)
    findings = preflight(snap.fleet, serving, snap.policy_config)
    blocking = [f for f in findings if f.blocking and f.rule not in TENANCY_RULES]
    report = PoolCheck(
        pool=pool.name,
        region=pool.spec.region,
        accelerator=pool.spec.accelerator,
        fits=not blocking,
        problems=[_clean(f.message, f.subject) for f in blocking],
        advisories=[_clean(f.message, f.subject) for f in findings if f not in blocking],
    )
    if not blocking:
        path = f"servings[{CHECK_SERVING}]"
        alone = build_fleet(snap.stack, stack_data(snap.fleet), [(path, serving)])
        plan = plan_placement(alone, alone.servings[0], 0, path)
        if not isinstance(plan, Issue):
            report.tensor, report.pipeline, report.nodes = plan.tensor, plan.pipeline, plan.nodes
            report.devices_per_replica = plan.devices_per_replica
            report.required_gib = round(plan.memory.required_gib, 1)
            report.budget_gib = round(plan.memory.budget_gib, 1)
    errors = [FieldError(field=_field_of(f.subject), message=_clean(f.message, f.subject)) for f in blocking]
    return report, errors


def check_template(services: Services, model: PlazaModel, body: DeployTemplateIn) -> TemplateCheck:
    """Everything the core says about `body` for `model`, pool by pool. 422 on what is wrong with the
    template itself (stack, stack template, flags, sizing facts); `ok` is false when no pool fits."""
    return _evaluate(services, model, body)[0]


def require_fit(services: Services, model: PlazaModel, body: DeployTemplateIn) -> TemplateCheck:
    """`check_template`, and 422 when no pool fits: one field error per reason, naming the pools."""
    check, fields = _evaluate(services, model, body)
    if not check.ok:
        summary = f"{model.id} fits no {body.accelerator} pool of stack {check.stack!r}"
        raise Invalid(f"{summary}: {fields[0].field}: {fields[0].message}" if fields else summary, fields)
    return check


def _evaluate(
    services: Services, model: PlazaModel, body: DeployTemplateIn
) -> tuple[TemplateCheck, list[FieldError]]:
    snap = snapshot(services, body.stack)
    template = stack_template(snap, body)
    check_serves(model, template.engine)
    pools = matching_pools(snap, body.accelerator)
    check_flags(template, list(body.extra_args))
    model_reference(model)
    reports: list[PoolCheck] = []
    reasons: dict[tuple[str, str], list[str]] = defaultdict(list)
    for pool in pools:
        report, errors = _check_pool(snap, model, body, pool)
        reports.append(report)
        for error in dict.fromkeys((e.field, e.message) for e in errors):
            reasons[error].append(pool.name)
    # A reason every pool shares is the template's (e.g. max_model_len); others name their pools.
    fields = [
        FieldError(field=f, message=m if len(names) == len(pools) else f"pool {', '.join(names)}: {m}")
        for (f, m), names in reasons.items()
    ]
    check = TemplateCheck(
        ok=any(r.fits for r in reports),
        stack=snap.stack,
        commit=snap.commit,
        engine=template.engine,
        engine_version=template.engine_version,
        pools=reports,
    )
    return check, fields


def template_body(row: ModelDeployTemplate) -> DeployTemplateIn:
    """A saved template as the body that created it."""
    spec = {k: v for k, v in row.spec.items() if k in DeployTemplateIn.model_fields}
    return DeployTemplateIn.model_validate(
        {
            "name": row.name,
            "description": row.description,
            "stack": row.stack,
            "stack_template": row.stack_template,
            "accelerator": row.accelerator,
            **spec,
        }
    )


def draft_name(model_id: str, pool: str) -> str:
    """A serving name from the model id that leaves room for the `<serving>-<pool>` object names."""
    base = re.sub(r"[^a-z0-9]+", "-", model_id.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"m-{base}"
    room = max(2, 62 - len(pool))
    return base[:room].rstrip("-") or "m0"


def serving_draft(
    services: Services, model: PlazaModel, row: ModelDeployTemplate, pool_name: str | None
) -> ServingSpecIn:
    """The serving body the deploy form starts from: the template on `pool_name` (default: the first
    pool it fitted when saved that the stack still has)."""
    body = template_body(row)
    snap = snapshot(services, row.stack)
    pools = {p.name: p for p in matching_pools(snap, row.accelerator)}
    if pool_name is None:
        fitted = [p for p in row.spec.get("pools", []) if p in pools]
        pool_name = fitted[0] if fitted else next(iter(pools))
    pool = pools.get(pool_name)
    if pool is None:
        raise Invalid.field(
            "pool",
            msg(
                "{pool!r} is not a {accelerator} pool of stack {stack!r} (have: {have})",
                pool=pool_name,
                accelerator=row.accelerator,
                stack=row.stack,
                have=", ".join(pools),
            ),
        )
    serving = candidate(draft_name(model.id, pool.name), model, body, pool, replicas=1)
    serving["stack"] = row.stack
    serving["public_model_name"] = model.id
    return ServingSpecIn.model_validate(serving)


def used_by_servings(services: Services, model: PlazaModel) -> list[str]:
    """`stack/serving` of every serving, in any stack at HEAD, that runs `model`."""
    repo = services.repository
    found: list[str] = []
    for stack in repo.stacks():
        try:
            servings: list[Any] = list(repo.snapshot(stack).fleet.servings)
        except IssuesError:
            servings = _raw_servings(services, stack)
        for s in servings:
            ref = s.model if isinstance(s, ModelServing) else s.get("model")
            uri = ref.get("uri") if isinstance(ref, dict) else getattr(ref, "uri", None)
            if ref == model.id or (uri is not None and uri == model.source_uri):
                found.append(f"{stack}/{s.name if isinstance(s, ModelServing) else s.get('name')}")
    return found


def _raw_servings(services: Services, stack: str) -> list[dict[str, Any]]:
    """Serving files read as plain data, for a stack whose HEAD does not validate."""
    repo = services.repository
    folder = repo.stacks_dir / stack / "servings"
    with repo.lock:
        names = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        return [s for n in names if (s := repo.read_serving(stack, n)) is not None]
