"""What the deploy preflight says about model files: for each region whose store lacks the model, how
far a requested copy into it is (or that none was requested, and how to ask for one)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.files import records
from store.models import ModelFiles


def notes(session: Session, stack: str, model_id: str, regions: Iterable[str]) -> dict[str, str]:
    """region → a sentence to add to its model-store finding."""
    row = session.scalar(select(ModelFiles).where(ModelFiles.stack == stack, ModelFiles.model_id == model_id))
    by_region = {loc.region: loc for loc in row.locations} if row is not None else {}
    out: dict[str, str] = {}
    for region in regions:
        loc = by_region.get(region)
        if loc is None:
            out[region] = (
                f"no download of {model_id!r} into {region} was requested "
                "(POST /api/model-files, or the console's model files page)"
            )
        elif loc.state != "ready":
            out[region] = f"the download of {model_id!r} into {region} is {records.describe(loc)}"
    return out


__all__ = ["notes"]
