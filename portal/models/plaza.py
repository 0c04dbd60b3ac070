"""The model plaza: providers, models, and the deploy templates ops attach to a model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, utcnow


class Provider(Base):
    __tablename__ = "providers"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)  # e.g. "qwen", "deepseek-ai"
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    icon: Mapped[str | None] = mapped_column(String(2048), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PlazaModel(Base):
    __tablename__ = "plaza_models"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # e.g. "qwen2.5-7b-instruct"
    name: Mapped[str] = mapped_column(String(200), unique=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("providers.id", ondelete="RESTRICT"))
    capabilities: Mapped[list[str]] = mapped_column(default=list)  # text-generation, vision, embedding, …
    tags: Mapped[list[str]] = mapped_column(default=list)
    context_length: Mapped[int | None] = mapped_column(default=None)
    params_b: Mapped[float | None] = mapped_column(default=None)  # parameters, in billions
    dtype: Mapped[str] = mapped_column(String(16), default="bfloat16")
    description: Mapped[str] = mapped_column(Text, default="")
    readme: Mapped[str] = mapped_column(Text, default="")
    icon: Mapped[str | None] = mapped_column(String(2048), default=None)
    source_uri: Mapped[str | None] = mapped_column(String(2048), default=None)  # hf://, s3://, pvc://
    license: Mapped[str | None] = mapped_column(String(100), default=None)
    published: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    provider: Mapped[Provider] = relationship(lazy="joined")
    deploy_templates: Mapped[list[ModelDeployTemplate]] = relationship(
        back_populates="model",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="ModelDeployTemplate.id",
    )


class ModelDeployTemplate(Base):
    """How to run one plaza model on one accelerator: the stack template it builds on, plus the
    model-specific layout, arguments and env. Saved only after the core accepts it."""

    __tablename__ = "model_deploy_templates"
    __table_args__ = (UniqueConstraint("model_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("plaza_models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    stack: Mapped[str] = mapped_column(String(63))
    stack_template: Mapped[str] = mapped_column(String(63))  # a template of the stack (engine, image)
    accelerator: Mapped[str] = mapped_column(String(63))  # vendor id, e.g. nvidia, ascend
    engine: Mapped[str] = mapped_column(String(16))
    engine_version: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)  # parallelism, max_model_len, args, env
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    model: Mapped[PlazaModel] = relationship(back_populates="deploy_templates")
