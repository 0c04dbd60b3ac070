"""The model plaza: providers, models, and the deploy templates ops attach to a model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, Mapper, mapped_column, relationship

from store.db import Base, utcnow


class Provider(Base):
    __tablename__ = "providers"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)  # e.g. "qwen", "deepseek"
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    icon: Mapped[str | None] = mapped_column(Text, default=None)  # https URL or a small data: URI
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PlazaModel(Base):
    __tablename__ = "plaza_models"
    __table_args__ = (Index("ix_plaza_models_published_provider", "published", "provider_id"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # e.g. "qwen2.5-7b-instruct"
    name: Mapped[str] = mapped_column(String(200), unique=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="RESTRICT"))
    capabilities: Mapped[list[str]] = mapped_column(default=list)  # text-generation, vision, embedding, …
    tags: Mapped[list[str]] = mapped_column(default=list)
    context_length: Mapped[int | None] = mapped_column(default=None)
    params_b: Mapped[float | None] = mapped_column(default=None)  # parameters, in billions
    dtype: Mapped[str] = mapped_column(String(16), default="bfloat16")  # the planner's dtypes
    description: Mapped[str] = mapped_column(Text, default="")
    readme: Mapped[str] = mapped_column(Text, default="")
    icon: Mapped[str | None] = mapped_column(Text, default=None)  # https URL or a small data: URI
    source_uri: Mapped[str | None] = mapped_column(String(2048), default=None)  # hf://, s3://, pvc://
    license: Mapped[str | None] = mapped_column(String(100), default=None)
    published: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Derived, kept by the mapper events below, so search and facet filters are plain LIKEs that
    # behave the same on SQLite and PostgreSQL (JSON containment differs between the two).
    search_text: Mapped[str] = mapped_column(Text, default="")  # lower-cased id, name, description, tags
    facet_index: Mapped[str] = mapped_column(Text, default="")  # "|cap:vision|tag:chat|"

    provider: Mapped[Provider] = relationship(lazy="joined")
    deploy_templates: Mapped[list[ModelDeployTemplate]] = relationship(
        back_populates="model",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="ModelDeployTemplate.id",
    )

    def refresh_index(self) -> None:
        tags = list(self.tags or [])
        self.search_text = "\n".join([self.id, self.name, self.description or "", *tags]).lower()
        facets = [f"cap:{c}" for c in self.capabilities or []] + [f"tag:{t.lower()}" for t in tags]
        self.facet_index = "|" + "".join(f"{f}|" for f in facets)


@event.listens_for(PlazaModel, "before_insert")
@event.listens_for(PlazaModel, "before_update")
def _refresh_index(_mapper: Mapper[PlazaModel], _connection: Any, target: PlazaModel) -> None:
    target.refresh_index()


class ModelDeployTemplate(Base):
    """How to run one plaza model on one accelerator: the stack template it builds on, plus the
    model-specific layout, arguments and env. Saved only after the core accepts it."""

    __tablename__ = "model_deploy_templates"
    __table_args__ = (UniqueConstraint("model_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("plaza_models.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    stack: Mapped[str] = mapped_column(String(63))
    stack_template: Mapped[str] = mapped_column(String(63))  # a template of the stack (engine, image)
    accelerator: Mapped[str] = mapped_column(String(63))  # vendor id (nvidia) or vendor/model
    engine: Mapped[str] = mapped_column(String(16))
    engine_version: Mapped[str] = mapped_column(String(32))
    # parallelism, max_model_len, extra_args, env, gpu_memory_utilization, quantization, and the
    # pools the core found the model fits on when the template was saved
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped[PlazaModel] = relationship(back_populates="deploy_templates")
