"""What every process of the platform reads the same way: where data lives and the hashing pepper.

Prefix `MODELFLEET_`; the defaults are the embedded setup (`make run`): a SQLite file under `var/`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELFLEET_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="where the embedded defaults keep their files")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file <data_dir>/modelfleet.db"
    )
    pepper: SecretStr | None = Field(
        default=None,
        description="server secret mixed into every stored key and token hash; "
        "default: generated once into <data_dir>/pepper",
    )

    # Bounded input (store/bounds.py): both planes refuse what is bigger or deeper than this.
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, description="total size of a request's headers; larger: 431"
    )
    max_json_depth: int = Field(
        default=64,
        ge=2,
        le=500,
        description="deepest nesting of a JSON body's arrays and objects; deeper: 400",
    )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'modelfleet.db').resolve()}"
