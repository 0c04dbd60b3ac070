"""The user view: model plaza, deploy, my services, experience (chat and compare), API keys, usage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console import charts
from console.client import ApiError, all_of
from console.web import PREFIX, Ctx, page
from store.buckets import Period, ceil, floor, next_start
from store.periods import QUOTA_REFRESH_CYCLES

router = APIRouter(prefix=PREFIX, include_in_schema=False)
PLAZA_PAGE_SIZE = 24
SORTS = ("-created", "name", "-params", "params")
RANGES: dict[str, tuple[timedelta, Period]] = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "day"),
    "30d": (timedelta(days=30), "day"),
}


def _int(value: str | None, default: int, low: int = 1, high: int = 1_000_000) -> int:
    try:
        return min(max(int(value or default), low), high)
    except ValueError:
        return default


def _base_url(request: Request) -> str:
    return str(request.app.state.services.settings.gateway_base_url).rstrip("/") + "/v1"


async def _workspace_models(ctx: Ctx) -> list[dict[str, Any]]:
    if not ctx.ws:
        return []
    data = await ctx.api.get(f"/api/workspaces/{ctx.ws}/models", page_size=500)
    return list(data["items"])


# Capabilities of a model that answers a chat (the gateway's own list: gateway/endpoint.py GENERATIVE).
CHATS = frozenset(
    {"text-generation", "reasoning", "tools", "vision", "audio-to-audio", "video-understanding"}
)


def _chat_models(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The models the chat and compare pages offer: those that chat, and those that do not say."""
    return [m for m in models if m.get("capabilities") is None or CHATS & set(m["capabilities"])]


@router.get("/")
async def home() -> Response:
    return RedirectResponse(f"{PREFIX}/plaza", status_code=307)


# -- model plaza ---------------------------------------------------------------------------------------


@router.get("/plaza")
async def plaza(request: Request) -> Response:
    ctx = await page(request)
    qp = request.query_params
    sort = qp.get("sort") or "-created"
    sort = sort if sort in SORTS else "-created"
    selected = {
        "provider": qp.getlist("provider"),
        "capability": qp.getlist("capability"),
        "tag": qp.getlist("tag"),
    }
    params = {
        "q": qp.get("q"),
        **selected,
        "sort": sort,
        "published": "true",
        "page": _int(qp.get("page"), 1),
        "page_size": PLAZA_PAGE_SIZE,
    }
    models, facets = await all_of(
        ctx.api.get("/api/plaza/models", **params), ctx.api.get("/api/plaza/facets")
    )
    keep = [(k, v) for k, values in selected.items() for v in values]
    if qp.get("q"):
        keep.append(("q", qp["q"]))
    keep.append(("sort", str(sort)))
    args = urlencode(keep) + "&"
    return ctx.render(
        "plaza.html",
        title=ctx.t("nav.plaza"),
        models=models,
        facets=facets,
        selected=selected,
        q=qp.get("q", ""),
        sort=sort,
        sorts=SORTS,
        pager_args=args,
    )


@router.get("/plaza/{model_id}")
async def model_page(request: Request, model_id: str) -> Response:
    ctx = await page(request)
    model, served, availability = await all_of(
        ctx.api.get(f"/api/plaza/models/{model_id}"),
        _workspace_models(ctx),
        ctx.api.get("/api/model-files:availability", model=model_id),
    )
    maas = [m for m in served if m.get("plaza_model_id") == model_id]
    examples = dict(model["examples"])
    if maas:  # call it by the name the gateway serves it under in this workspace
        old, new = json.dumps(model_id), json.dumps(maas[0]["model"])
        examples = {k: (v.replace(old, new) if k != "base_url" else v) for k, v in examples.items()}
    keys: list[dict[str, Any]] = []
    if ctx.ws:
        keys = (await ctx.api.get(f"/api/workspaces/{ctx.ws}/api-keys", page_size=100))["items"]
    return ctx.render(
        "model.html",
        title=model["name"],
        model=model,
        maas=maas,
        examples=examples,
        keys=keys,
        availability=availability,  # each region's copy of the model's files
    )


# -- deploy --------------------------------------------------------------------------------------------


@router.get("/deploy")
async def deploy(request: Request) -> Response:
    ctx = await page(request)
    qp = request.query_params
    models_page, regions = await all_of(
        ctx.api.get("/api/plaza/models", published="true", page_size=500, sort="name"),
        ctx.api.get("/api/regions", page_size=100),
    )
    deployable = [m for m in models_page["items"] if m["deploy_templates"] > 0]
    model_id = qp.get("model") or (deployable[0]["id"] if deployable else None)
    model = await ctx.api.get(f"/api/plaza/models/{model_id}") if model_id else None
    template_id = _int(qp.get("template"), 0, 0)
    templates = model["templates"] if model else []
    template = next((t for t in templates if t["id"] == template_id), templates[0] if templates else None)
    pools = {p["name"]: {**p, "region": r["name"]} for r in regions["items"] for p in r["pools"]}
    return ctx.render(
        "deploy.html",
        title=ctx.t("nav.deploy"),
        deployable=deployable,
        model=model,
        templates=templates,
        template=template,
        pools=pools,
    )


# -- my services ---------------------------------------------------------------------------------------


@router.get("/services")
async def services(request: Request) -> Response:
    ctx = await page(request)
    servings: dict[str, Any] = {"items": [], "total": 0}
    if ctx.ws:
        servings = await ctx.api.get(f"/api/workspaces/{ctx.ws}/servings", page_size=500)
    return ctx.render("services.html", title=ctx.t("nav.services"), servings=servings)


FAILURE_LOG_LINES = 20
FAILURE_LOGS_SHOWN = 3  # failed replicas whose last lines a page shows (the rest: the log view)


async def _observed(ctx: Ctx, name: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The serving's observed status and replicas; (None, []) before anything was published."""
    base = f"/api/workspaces/{ctx.ws}/servings/{name}"
    try:
        status, replicas = await all_of(ctx.api.get(f"{base}/status"), ctx.api.get(f"{base}/replicas"))
    except ApiError as exc:
        if exc.status == 404:
            return None, []
        raise
    return status, list(replicas["items"])


async def _last_lines(ctx: Ctx, name: str, replica: dict[str, Any]) -> dict[str, Any]:
    """The last log lines of a failed replica (its previous run when the current one has none)."""
    path = f"/api/workspaces/{ctx.ws}/servings/{name}/logs"
    try:
        log = await ctx.api.get(path, replica=replica["name"], tail=FAILURE_LOG_LINES)
        if not log["lines"] and replica.get("restarts"):
            log = await ctx.api.get(path, replica=replica["name"], tail=FAILURE_LOG_LINES, previous="true")
    except ApiError as exc:  # e.g. 501: this runtime's logs are not available here
        return {"replica": replica["name"], "lines": [], "note": exc.message}
    return dict(log)


@router.get("/services/{name}")
async def service(request: Request, name: str) -> Response:
    ctx = await page(request)
    if not ctx.ws:
        raise ApiError(404, "not_found", f"serving {name!r} not found")
    serving, regions, requests, (status, replicas) = await all_of(
        ctx.api.get(f"/api/workspaces/{ctx.ws}/servings/{name}"),
        ctx.api.get("/api/regions", page_size=100),
        ctx.api.get(f"/api/workspaces/{ctx.ws}/stack-requests", serving=name, page_size=10),
        _observed(ctx, name),
    )
    domains = {r["name"]: r["gateway_domain"] for r in regions["items"]}
    spec = serving.get("spec") or serving.get("committed_spec") or {}
    by_region: dict[str, list[dict[str, Any]]] = {}
    for p in serving["placements"]:
        by_region.setdefault(p["region"], []).append(p)
    failed = [r for r in replicas if r["state"] == "failed"][:FAILURE_LOGS_SHOWN]
    failure_logs = list(await all_of(*(_last_lines(ctx, name, r) for r in failed))) if failed else []
    stopped = serving.get("stopped_replicas") or []
    return ctx.render(
        "service.html",
        title=name,
        serving=serving,
        spec=spec,
        gone=serving.get("spec") is None and serving.get("committed_spec") is None,
        by_region=by_region,
        domains=domains,
        requests=requests["items"],
        endpoint=_base_url(request),
        access_name=spec.get("public_model_name") or name,
        status=status,
        replicas=replicas,
        failure_logs=failure_logs,
        # what Start brings back: the remembered replicas, or one per placement
        restores=sum(stopped) if any(stopped) else len(serving["placements"]),
    )


@router.get("/jobs/{job_id}")
async def job(request: Request, job_id: int) -> Response:
    ctx = await page(request)
    data = await ctx.api.get(f"/api/jobs/{job_id}")
    return ctx.render("job.html", title=f"#{job_id}", job=data)


# -- experience ----------------------------------------------------------------------------------------


@router.get("/chat")
async def chat(request: Request) -> Response:
    ctx = await page(request)
    models = _chat_models(await _workspace_models(ctx))
    selected = request.query_params.get("model", "")
    if selected and all(m["model"] != selected for m in models):
        # "Try it" on a service of the workspace: its served name (the gateway decides access).
        models = [{"model": selected}, *models]
    return ctx.render(
        "chat.html",
        title=ctx.t("nav.chat"),
        models=models,
        selected=selected,
        base_url=_base_url(request),
    )


# The playground's tabs: what each tries, and the capability a model needs to be offered there.
TRY_TABS = {
    "images": "image-generation",
    "transcription": "speech-to-text",
    "speech": "text-to-speech",
    "rerank": "rerank",
    "embeddings": "embedding",
}


@router.get("/try")
async def playground(request: Request) -> Response:
    """Every modality but chat: images, speech to text, text to speech, rerank and embeddings."""
    ctx = await page(request)
    tab = request.query_params.get("tab", "images")
    if tab not in TRY_TABS:
        tab = "images"
    models = await _workspace_models(ctx)
    # Models that say they serve the tab's capability; those that do not describe themselves too.
    offered = [m for m in models if m.get("capabilities") is None or TRY_TABS[tab] in m["capabilities"]]
    return ctx.render(
        "try.html",
        title=ctx.t("nav.try"),
        tab=tab,
        tabs=list(TRY_TABS),
        models=offered,
        any_models=bool(models),
        selected=request.query_params.get("model", ""),
    )


@router.get("/compare")
async def compare(request: Request) -> Response:
    ctx = await page(request)
    models = _chat_models(await _workspace_models(ctx))
    wanted = [m for m in request.query_params.getlist("model") if m][:3]
    defaults = wanted + [m["model"] for m in models if m["model"] not in wanted]
    return ctx.render("compare.html", title=ctx.t("nav.compare"), models=models, defaults=defaults[:3])


# -- API keys ------------------------------------------------------------------------------------------


@router.get("/keys")
async def keys(request: Request) -> Response:
    ctx = await page(request)
    if not ctx.ws:
        return ctx.render("keys.html", title=ctx.t("nav.keys"), keys=None, models=[], workspace=None)
    keys_page, models, workspace = await all_of(
        ctx.api.get(f"/api/workspaces/{ctx.ws}/api-keys", page_size=200),
        _workspace_models(ctx),
        ctx.api.get(f"/api/workspaces/{ctx.ws}"),
    )
    return ctx.render(
        "keys.html",
        title=ctx.t("nav.keys"),
        keys=keys_page,
        models=models,
        workspace=workspace,
        refresh_cycles=QUOTA_REFRESH_CYCLES,  # the API's own choices
    )


# -- usage ---------------------------------------------------------------------------------------------


def buckets_of(since: datetime, until: datetime, period: Period) -> list[datetime]:
    out, at = [], since
    while at < until:
        out.append(at)
        at = next_start(at, period)
    return out


def usage_series(
    items: list[dict[str, Any]], buckets: list[datetime], by: str, measure: str
) -> dict[str, list[float]]:
    index = {b: i for i, b in enumerate(buckets)}
    out: dict[str, list[float]] = {}
    for line in items:
        bucket = datetime.fromisoformat(line["bucket"]).astimezone(UTC)
        name = (line.get("api_key_name") or line.get("api_key") or "?") if by == "api_key" else line["model"]
        values = out.setdefault(str(name), [0.0] * len(buckets))
        if bucket in index:
            values[index[bucket]] += float(line[measure])
    return out


@router.get("/usage")
async def usage(request: Request) -> Response:
    ctx = await page(request)
    qp = request.query_params
    span = qp.get("range") or "24h"
    span = span if span in RANGES else "24h"
    by = "api_key" if qp.get("by") == "api_key" else "model"
    length, period = RANGES[span]
    until = ceil(datetime.now(UTC), "hour")
    since = floor(until - length, period)
    filters = {"api_key": qp.get("key") or None, "model": qp.get("model") or None}
    common = {"since": since.isoformat(), "until": until.isoformat(), "period": period, **filters}
    if not ctx.ws:
        return ctx.render("usage.html", title=ctx.t("nav.usage"), report=None)
    base = f"/api/workspaces/{ctx.ws}/usage"
    report, per_series, keys_page, models = await all_of(
        ctx.api.get(base, group_by=["period", by], **common),
        ctx.api.get(base, group_by=[by], **common),
        ctx.api.get(f"/api/workspaces/{ctx.ws}/api-keys", page_size=200),
        _workspace_models(ctx),
    )
    buckets = buckets_of(since, until, period)
    label = "%H:%M" if period == "hour" else "%m-%d"
    other = ctx.t("usage.other")
    tokens = charts.series_from(usage_series(report["items"], buckets, by, "total_tokens"), other)
    requests = charts.series_from(usage_series(report["items"], buckets, by, "requests"), other)
    pairs = [("group_by", "period"), ("group_by", by), *((k, v) for k, v in common.items() if v is not None)]
    csv_url = f"{base}/export.csv?{urlencode(pairs)}"
    return ctx.render(
        "usage.html",
        title=ctx.t("nav.usage"),
        report=report,
        per_series=per_series["items"],
        tokens_chart=charts.stacked_bars(
            buckets, tokens, label_format=label, unit=ctx.t("usage.tokens"), chart_id="chart-tokens"
        ),
        requests_chart=charts.stacked_bars(
            buckets, requests, label_format=label, unit=ctx.t("usage.requests"), chart_id="chart-requests"
        ),
        tokens_legend=charts.legend(tokens),
        requests_legend=charts.legend(requests),
        span=span,
        ranges=list(RANGES),
        by=by,
        keys=keys_page["items"],
        models=models,
        filters=filters,
        csv_url=csv_url,
    )
