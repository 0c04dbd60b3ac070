"""The demo's MaaS models and API key (`python -m portal --demo`): a MaaS model for each public model
name of the demo stack's servings, answered by the engine simulator, and a key printed once."""

from __future__ import annotations

import sys

from sqlalchemy import select

from fleet.spec import ModelServing
from portal import audit
from portal.keys import mint_api_key
from portal.services import Services
from store.db import transaction
from store.models import ApiKey, MaasModel, MaasTarget, PlazaModel, Workspace

# Demo prices per million tokens (input, output, cached input), in the plaza's currency.
DEMO_PRICES = {
    "deepseek-r1": (4.0, 16.0, 1.0),
    "qwen2.5-72b-instruct": (4.0, 12.0, 1.0),
    "qwen3-32b": (2.0, 8.0, 0.5),
    "qwen2.5-7b-instruct": (0.5, 1.0, 0.1),
}
DEMO_KEY_NAME = "demo"
# The demo's models of the other modalities, answered by the engine simulator (no engine of the demo
# stack serves them): public id -> capabilities, its plaza model, price per unit (per image, second,
# character or document; docs/gateway/modalities.md), so every plaza example and the console's
# playground work offline.
DEMO_MEDIA: dict[str, tuple[list[str], str | None, float]] = {
    "bge-m3": (["embedding"], "bge-m3", 0.0),
    "bge-reranker-v2-m3": (["rerank"], "bge-reranker-v2-m3", 0.0001),
    "sim-image": (["image-generation"], None, 0.02),
    "sim-speech": (["text-to-speech"], None, 0.000015),
    "sim-whisper": (["speech-to-text"], None, 0.0001),
}


def seed_demo_gateway(
    services: Services, *, stack: str = "demo", workspace: str = "demo", actor: str = "system"
) -> None:
    """With `--demo`: a MaaS model for each public model name of the demo stack's servings (its serving
    targets, answered by the simulator above), and a demo API key for the demo workspace, printed once
    (only its hash is kept). Idempotent: only what is missing is added."""
    repo = services.repository
    if stack not in repo.stacks():
        return
    by_name: dict[str, list[ModelServing]] = {}
    for serving in repo.snapshot(stack).fleet.servings:
        if serving.public_model_name:
            by_name.setdefault(serving.public_model_name, []).append(serving)
    with transaction(services.sessions) as session:
        for public_id, servings in sorted(by_name.items()):
            if session.scalar(select(MaasModel.id).where(MaasModel.public_id == public_id)) is not None:
                continue
            source = servings[0].model
            plaza = session.get(PlazaModel, source) if isinstance(source, str) else None
            price_in, price_out, price_cached = DEMO_PRICES.get(public_id, (1.0, 2.0, 0.5))
            model = MaasModel(
                public_id=public_id,
                plaza_model_id=plaza.id if plaza is not None and plaza.published else None,
                strategy="weighted",
                enabled=True,
                visibility="all",
                visible_workspaces=[],
                price_input_per_m=price_in,
                price_output_per_m=price_out,
                price_cached_per_m=price_cached,
                targets=[MaasTarget(kind="serving", stack=stack, serving=s.name) for s in servings],
            )
            session.add(model)
            session.flush()
            audit.record(
                session,
                actor=actor,
                action="CreateMAASModel",
                resource_type="MAASModel",
                resource_id=public_id,
                after={
                    "public_id": public_id,
                    "targets": [{"kind": "serving", "stack": stack, "serving": s.name} for s in servings],
                    "strategy": "weighted",
                    "enabled": True,
                    "prices": [price_in, price_out, price_cached],
                },
            )
        for public_id, (capabilities, plaza_id, per_unit) in DEMO_MEDIA.items():
            if session.scalar(select(MaasModel.id).where(MaasModel.public_id == public_id)) is not None:
                continue
            plaza = session.get(PlazaModel, plaza_id) if plaza_id else None
            session.add(
                MaasModel(
                    public_id=public_id,
                    plaza_model_id=plaza.id if plaza is not None and plaza.published else None,
                    enabled=True,
                    visibility="all",
                    visible_workspaces=[],
                    price_input_per_m=0.1,
                    price_per_unit=per_unit,
                    capabilities=capabilities,
                    targets=[MaasTarget(kind="simulator", upstream_model=public_id)],
                )
            )
            audit.record(
                session,
                actor=actor,
                action="CreateMAASModel",
                resource_type="MAASModel",
                resource_id=public_id,
                after={
                    "public_id": public_id,
                    "targets": [{"kind": "simulator"}],
                    "capabilities": capabilities,
                },
            )
        ws = session.scalar(select(Workspace).where(Workspace.slug == workspace))
        if ws is None:
            return
        exists = session.scalar(
            select(ApiKey.id).where(ApiKey.workspace_id == ws.id, ApiKey.name == DEMO_KEY_NAME)
        )
        if exists is not None:
            return
        key, secret = mint_api_key(session, services.hasher, ws, name=DEMO_KEY_NAME, created_by=workspace)
        audit.record(
            session,
            actor=actor,
            action="CreateWSAPIKey",
            resource_type="APIKey",
            resource_id=key.public_id,
            workspace=workspace,
            after={"id": key.public_id, "name": DEMO_KEY_NAME, "key": secret.masked},
        )
    base = f"{services.settings.gateway_base_url.rstrip('/')}/v1"
    # Printed once, like the admin's token: only its hash is kept.
    print(
        f"modelfleet: demo API key (shown once): {secret.value}\n"
        f"modelfleet: OpenAI-compatible endpoint {base} (models answered by the engine SIMULATOR), e.g.\n"
        f'  OpenAI(base_url="{base}", api_key="{secret.value}").chat.completions.create('
        f'model="qwen2.5-7b-instruct", messages=[{{"role": "user", "content": "hi"}}])',
        file=sys.stderr,
        flush=True,
    )
