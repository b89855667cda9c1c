"""Typed settings: arguments, then ``STASK_*`` environment variables, then ``stask.toml``."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from stask.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///./storage/stask.db"
CONFIG_FILE_ENV = "STASK_CONFIG"
DEFAULT_CONFIG_FILE = "stask.toml"


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the top-level keys of ``stask.toml`` (or the file named by ``STASK_CONFIG``)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.data = self._load()

    def _load(self) -> dict[str, Any]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            with self.path.open("rb") as handle:
                data = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {self.path}: {exc} - fix the TOML syntax") from exc
        section = data.get("stask", data)
        known = set(self.settings_cls.model_fields)
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(
                f"unknown key(s) in {self.path}: {', '.join(unknown)} - "
                f"known keys are {', '.join(sorted(known))}"
            )
        return dict(section)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


class Settings(BaseSettings):
    """Everything stask reads from its environment. Minimal config is none at all."""

    model_config = SettingsConfigDict(env_prefix="STASK_", extra="forbid")

    database_url: str = DEFAULT_DATABASE_URL
    storage: Path = Path("./storage")
    workers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    default_queue: str = "default"
    lease_seconds: float = Field(default=30.0, gt=0)
    heartbeat_seconds: float = Field(default=5.0, gt=0)

    @field_validator("workers", mode="before")
    @classmethod
    def _split_workers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlSource(settings_cls, config_file_path())


def config_file_path() -> Path | None:
    explicit = os.environ.get(CONFIG_FILE_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_FILE_ENV} names {path}, which does not exist")
        return path
    return Path(DEFAULT_CONFIG_FILE)


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's report into one line a person can act on."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
