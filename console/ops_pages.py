"""The ops view (platform admins): plaza management, deploy templates, providers, MaaS models and
their limits, regions and pools, stack updates, workspace quotas, and the audit log.

Everything is read and changed through the API like the user view; the only thing read in process is
what the stack repository offers as suggestions for a form (stacks, their templates and servings,
accelerator vendors), which the API validates again when the form is sent.
"""

from __future__ import annotations

from typing import Any, get_args
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from console.charts import meter
from console.client import all_of
from console.web import PREFIX, Ctx, page
from fleet.catalog import vendors
from store.vocabulary import CAPABILITIES, Dtype, Strategy

router = APIRouter(prefix=f"{PREFIX}/ops", include_in_schema=False)
# The form's choices are the API's own types, so a value the console offers is one the API accepts.
DTYPES: tuple[str, ...] = get_args(Dtype)
STRATEGIES: tuple[str, ...] = get_args(Strategy)
SCOPES = ("global", "model", "workspace", "api_key", "api_key_model")
UNITS = ("rps", "rpm", "tpm", "tpd", "upm", "upd", "concurrency")
FILES_ACTIVE = ("queued", "downloading", "verifying")
AUDIT_FILTERS = ("action", "actor", "workspace", "resource_type", "resource_id", "result", "since", "until")


async def ops(request: Request) -> Ctx:
    ctx = await page(request)
    ctx.require_ops()
    return ctx


def _int(value: str | None, default: int) -> int:
    try:
        return max(int(value or default), 1)
    except ValueError:
        return default


def stack_suggestions(request: Request) -> dict[str, dict[str, list[str]]]:
    """Per stack: its deploy templates and servings at HEAD (for datalists; the API checks again)."""
    repository = request.app.state.services.repository
    out: dict[str, dict[str, list[str]]] = {}
    for stack in repository.stacks():
        try:
            fleet = repository.snapshot(stack).fleet
        except Exception:  # a stack that does not build offers no suggestions; the API says why
            out[stack] = {"templates": [], "servings": []}
            continue
        out[stack] = {
            "templates": sorted(fleet.templates),
            "servings": sorted(s.name for s in fleet.servings),
        }
    return out


# -- plaza management ----------------------------------------------------------------------------------


@router.get("/plaza")
async def plaza(request: Request) -> Response:
    ctx = await ops(request)
    qp = request.query_params
    published = qp.get("published") if qp.get("published") in ("true", "false") else None
    models = await ctx.api.get(
        "/api/plaza/models",
        q=qp.get("q"),
        published=published,
        sort="name",
        page=_int(qp.get("page"), 1),
        page_size=50,
    )
    args = urlencode([(k, v) for k, v in (("q", qp.get("q")), ("published", published)) if v]) + "&"
    return ctx.render(
        "ops/plaza.html",
        title=ctx.t("nav.ops_plaza"),
        models=models,
        q=qp.get("q", ""),
        published=published,
        pager_args=args,
    )


async def _model_form(ctx: Ctx, request: Request, model: dict[str, Any] | None) -> Response:
    providers = await ctx.api.get("/api/plaza/providers", page_size=500)
    suggestions = stack_suggestions(request) if model else {}
    check = None
    return ctx.render(
        "ops/model_form.html",
        title=model["name"] if model else ctx.t("ops.new_model"),
        model=model,
        providers=providers["items"],
        capabilities=CAPABILITIES,
        dtypes=DTYPES,
        stacks=suggestions,
        vendors=sorted(vendors()),
        check=check,
    )


@router.get("/plaza/new")
async def new_model(request: Request) -> Response:
    ctx = await ops(request)
    return await _model_form(ctx, request, None)


@router.get("/plaza/{model_id}")
async def edit_model(request: Request, model_id: str) -> Response:
    ctx = await ops(request)
    model = await ctx.api.get(f"/api/plaza/models/{model_id}")
    return await _model_form(ctx, request, model)


@router.get("/import")
async def import_models(request: Request) -> Response:
    ctx = await ops(request)
    return ctx.render("ops/import.html", title=ctx.t("ops.import"))


@router.get("/providers")
async def providers(request: Request) -> Response:
    ctx = await ops(request)
    data = await ctx.api.get("/api/plaza/providers", page_size=500)
    return ctx.render("ops/providers.html", title=ctx.t("nav.ops_providers"), providers=data["items"])


# -- MaaS models and limits ----------------------------------------------------------------------------


@router.get("/maas")
async def maas(request: Request) -> Response:
    ctx = await ops(request)
    qp = request.query_params
    data = await ctx.api.get("/api/maas-models", q=qp.get("q"), page=_int(qp.get("page"), 1), page_size=100)
    return ctx.render("ops/maas.html", title=ctx.t("nav.ops_maas"), models=data, q=qp.get("q", ""))


async def _maas_form(ctx: Ctx, request: Request, model: dict[str, Any] | None) -> Response:
    plaza, workspaces = await all_of(
        ctx.api.get("/api/plaza/models", page_size=500, sort="name"),
        ctx.api.get("/api/workspaces", page_size=500),
    )
    rules: list[dict[str, Any]] = []
    if model:
        rules = (await ctx.api.get("/api/rate-limits", model=model["public_id"], page_size=200))["items"]
    targets = (model or {}).get("targets") or [{"kind": "serving", "weight": 100, "priority": 0}]
    return ctx.render(
        "ops/maas_form.html",
        title=model["public_id"] if model else ctx.t("ops.new_maas"),
        model=model,
        targets=targets,
        plaza=plaza["items"],
        all_workspaces=workspaces["items"],
        stacks=stack_suggestions(request),
        strategies=STRATEGIES,
        capabilities=CAPABILITIES,
        rules=rules,
        scopes=SCOPES,
        units=UNITS,
    )


@router.get("/maas/new")
async def new_maas(request: Request) -> Response:
    ctx = await ops(request)
    return await _maas_form(ctx, request, None)


@router.get("/maas/{model_id}")
async def edit_maas(request: Request, model_id: int) -> Response:
    ctx = await ops(request)
    model = await ctx.api.get(f"/api/maas-models/{model_id}")
    return await _maas_form(ctx, request, model)


@router.get("/limits")
async def limits(request: Request) -> Response:
    ctx = await ops(request)
    qp = request.query_params
    rules, models = await all_of(
        ctx.api.get("/api/rate-limits", scope=qp.get("scope"), model=qp.get("model"), page_size=500),
        ctx.api.get("/api/maas-models", page_size=500),
    )
    return ctx.render(
        "ops/limits.html",
        title=ctx.t("nav.ops_limits"),
        rules=rules["items"],
        maas=models["items"],
        scopes=SCOPES,
        units=UNITS,
        fixed_model=None,
    )


# -- regions, jobs, workspaces, audit --------------------------------------------------------------------


@router.get("/regions")
async def regions(request: Request) -> Response:
    ctx = await ops(request)
    data = await ctx.api.get("/api/regions", stack=request.query_params.get("stack"), page_size=100)
    totals = {"capacity": 0, "allocated": 0}
    for region in data["items"]:
        for pool in region["pools"]:
            pool["meter"] = meter(pool["allocated"], pool["capacity"], pool["peak"])
            totals["capacity"] += pool["capacity"]
            totals["allocated"] += pool["allocated"] or 0
    return ctx.render(
        "ops/regions.html",
        title=ctx.t("nav.ops_regions"),
        regions=data["items"],
        totals=totals,
        total_meter=meter(totals["allocated"], totals["capacity"]),
    )


@router.get("/files")
async def files(request: Request) -> Response:
    """Model files: request a plaza model's files into regions, follow each region's copy (the page
    reloads itself while one is queued or running), retry, cancel, delete."""
    ctx = await ops(request)
    qp = request.query_params
    data, models, regions = await all_of(
        ctx.api.get("/api/model-files", model=qp.get("model"), page=_int(qp.get("page"), 1), page_size=50),
        ctx.api.get("/api/plaza/models", page_size=500, sort="name"),
        ctx.api.get("/api/regions", page_size=100),
    )
    for row in data["items"]:
        for loc in row["locations"]:
            loc["meter"] = meter(loc["bytes_done"], loc["bytes_total"]) if loc["bytes_total"] else None
    active = any(loc["state"] in FILES_ACTIVE for row in data["items"] for loc in row["locations"])
    return ctx.render(
        "ops/files.html",
        title=ctx.t("nav.ops_files"),
        rows=data,
        models=models["items"],
        regions=regions["items"],
        active=active,
        pager_args=urlencode([("model", qp["model"])]) + "&" if qp.get("model") else "",
    )


@router.get("/jobs")
async def jobs(request: Request) -> Response:
    ctx = await ops(request)
    qp = request.query_params
    data = await ctx.api.get("/api/jobs", status=qp.get("status"), page=_int(qp.get("page"), 1), page_size=50)
    args = urlencode([("status", qp["status"])]) + "&" if qp.get("status") else ""
    return ctx.render(
        "ops/jobs.html", title=ctx.t("nav.ops_jobs"), jobs=data, status=qp.get("status", ""), pager_args=args
    )


@router.get("/workspaces")
async def workspaces(request: Request) -> Response:
    ctx = await ops(request)
    data = await ctx.api.get("/api/workspaces", page_size=500)
    return ctx.render("ops/workspaces.html", title=ctx.t("nav.ops_workspaces"), rows=data["items"])


@router.get("/audit")
async def audit(request: Request) -> Response:
    ctx = await ops(request)
    qp = request.query_params
    filters = {k: qp.get(k) or None for k in AUDIT_FILTERS}
    for key in ("since", "until"):  # <input type=datetime-local> sends local wall time; treat it as UTC
        if filters[key] and len(filters[key] or "") == 16:
            filters[key] = f"{filters[key]}:00+00:00"
    data = await ctx.api.get("/api/audit", **filters, page=_int(qp.get("page"), 1), page_size=50)
    kept = [(k, v) for k, v in filters.items() if v]
    return ctx.render(
        "ops/audit.html",
        title=ctx.t("nav.ops_audit"),
        events=data,
        filters={k: qp.get(k, "") for k in AUDIT_FILTERS},
        csv_url="/api/audit/export.csv" + (f"?{urlencode(kept)}" if kept else ""),
        pager_args=urlencode([(k, qp[k]) for k in AUDIT_FILTERS if qp.get(k)]) + "&",
    )
