"""Settings: arguments, then STASK_* variables, then stask.toml; one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stask.errors import ConfigError
from stask.settings import DEFAULT_DATABASE_URL, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STASK_* variables and no stask.toml but the ones a test writes."""
    for name in list(os.environ):
        if name.upper().startswith("STASK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.storage == Path("storage")
    assert settings.workers == []
    assert settings.default_queue == "default"
    assert (settings.lease_seconds, settings.heartbeat_seconds) == (30.0, 5.0)


def test_arguments_win_over_environment_over_file(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("stask.toml").write_text(
        'database_url = "sqlite:///file.db"\nstorage = "from-file"\nworkers = ["f.workers"]\n'
        "lease_seconds = 12\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("STASK_STORAGE", "from-env")
    monkeypatch.setenv("stask_workers", " a.workers, ,b.workers ")  # any letter case
    monkeypatch.setenv("STASK_HEARTBEAT_SECONDS", "0.5")
    settings = load_settings(database_url=None, storage=Path("from-arg"))
    assert settings.database_url == "sqlite:///file.db"
    assert settings.storage == Path("from-arg")
    assert settings.workers == ["a.workers", "b.workers"]
    assert (settings.lease_seconds, settings.heartbeat_seconds) == (12.0, 0.5)


def test_file_section_and_config_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    named = Path("elsewhere.toml")
    named.write_text('[stask]\nworkers = "x.workers,y.workers"\n', encoding="utf-8")
    monkeypatch.setenv("STASK_CONFIG", str(named))
    assert load_settings().workers == ["x.workers", "y.workers"]
    monkeypatch.setenv("STASK_CONFIG", "missing.toml")
    with pytest.raises(ConfigError, match=r"STASK_CONFIG names missing\.toml, which does not"):
        load_settings()


def test_every_invalid_value_is_named_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STASK_LEASE_SECONDS", "soon")
    with pytest.raises(ConfigError) as raised:
        load_settings(workers=["ok", 3], heartbeat_seconds=0, colour="blue")
    assert str(raised.value) == (
        "invalid settings: workers.1: Input should be a valid string; "
        "lease_seconds: Input should be a valid number, unable to parse string as a number; "
        "heartbeat_seconds: Input should be greater than 0; "
        "colour: Extra inputs are not permitted"
    )


def test_unknown_file_keys_are_refused() -> None:
    Path("stask.toml").write_text('database_ur = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in stask\.toml: database_ur"):
        load_settings()


def test_json_round_trip() -> None:
    settings = load_settings(storage="/data/stask", workers=["a.workers"], lease_seconds="7")
    values = settings.to_json()
    assert values["storage"] == "/data/stask"
    assert Settings(**values) == settings
