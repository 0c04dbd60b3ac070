"""Shapes every list endpoint shares: paging in, a page out; names checked the same way."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

T = TypeVar("T")

SLUG = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
SLUG_HELP = "2-63 lowercase letters, digits or '-', starting and ending with a letter or digit"


class PageParams(BaseModel):
    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(20, ge=1, le=500)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


def page_params(
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 20,
) -> PageParams:
    return PageParams(page=page, page_size=page_size)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int
