from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from portal.auth import ServicesDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


@router.get("/healthz", response_model=Health)
def healthz(services: ServicesDep) -> Health:
    with services.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return Health(status="ok", database=services.engine.url.get_backend_name())
