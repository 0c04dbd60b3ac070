"""What every process of the platform reads the same way: where data lives and the hashing pepper.

Prefix `MODELFLEET_`; the defaults are the embedded setup (`make run`): a SQLite file under `var/`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

PREFIX = "MODELFLEET_"


class StoreSettings(BaseSettings):
    # Inherited by the planes' settings (gateway/settings.py, portal/settings.py).
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_nested_delimiter="__", extra="ignore")

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

    @field_validator("database_url")
    @classmethod
    def _a_database_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                make_url(value)
            except ArgumentError:
                raise ValueError(
                    "not a database URL (e.g. postgresql+psycopg://user@host/db or sqlite:///path)"
                ) from None
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'modelfleet.db').resolve()}"


def settings_problems(error: ValidationError) -> str:
    """A settings error in one line that names each environment variable and why it was refused.

    The values are not repeated: a refused secret (the pepper, a token) must not reach the logs."""
    said = []
    for problem in error.errors(include_url=False):
        where = "__".join(str(part) for part in problem["loc"]).upper()
        message = problem["msg"].removeprefix("Value error, ")  # a validator's own sentence
        said.append(f"{PREFIX}{where}: {message}" if where else message)
    return "; ".join(said)
