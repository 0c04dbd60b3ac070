"""The seed catalog (`portal/data/plaza.yaml`): read through the importer, so it obeys the same rules
as any index an admin imports."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sqlalchemy.orm import Session

from portal.plaza import importer, store
from portal.plaza.schemas import ModelIn, ProviderIn

SEED_PATH = Path(__file__).resolve().parent.parent / "data" / "plaza.yaml"


def default_readme(model: ModelIn) -> str:
    """A detail page for a model whose entry has no readme: what it is and where it comes from."""
    lines = [f"# {model.name}", "", model.description]
    facts = []
    if model.params_b:
        facts.append(f"- Parameters: {model.params_b:g}B")
    if model.context_length:
        facts.append(f"- Context length: {model.context_length:,} tokens")
    if model.license:
        facts.append(f"- License: {model.license}")
    if model.source_uri and model.source_uri.startswith("hf://"):
        repo = model.source_uri.removeprefix("hf://")
        facts.append(f"- Weights: [{repo}](https://huggingface.co/{repo})")
    return "\n".join([*lines, "", *facts] if facts else lines).strip() + "\n"


@cache
def seed_catalog(path: Path = SEED_PATH) -> tuple[tuple[ModelIn, ...], tuple[ProviderIn, ...]]:
    """Every model and provider of the seed file; ValueError naming the entry if one is invalid."""
    index = importer.parse_text(path.read_text("utf-8"), "seed")
    models = []
    for i, entry in enumerate(index.entries):
        if entry.model is None:
            detail = "; ".join(f"{p.field}: {p.message}" for p in entry.problems)
            raise ValueError(f"{path.name}: models[{i}] is invalid: {detail}")
        model = entry.model
        if not model.readme:
            model = model.model_copy(update={"readme": default_readme(model)})
        models.append(model)
    if index.problems:
        raise ValueError(f"{path.name}: {'; '.join(index.problems)}")
    return tuple(models), tuple(index.providers.values())


def load_seed(session: Session, actor: str, *, publish: bool = True) -> store.BatchResult:
    """Add the seed models (and providers) the plaza does not have yet, in the caller's transaction."""
    models, providers = seed_catalog()
    return store.batch_create(session, actor, models, providers, publish=publish)
