"""Settings: built from an injected environment, validated, never leaked."""

from __future__ import annotations

import pytest

from backend.app import app_from_env
from backend.serve import logging_config, run
from backend.settings import Settings, SettingsError, mask_url

TOKEN = "t0ken-with-enough-characters"
BASE_ENV = {"FLUXION_DB": "/data/ventas.duckdb", "REDIS_URL": "redis://r:6379/0"}


def test_from_env_reads_required_and_optional_variables() -> None:
    """Every documented variable lands in its field."""
    env = {
        **BASE_ENV,
        "FLUXION_ADMIN_TOKEN": TOKEN,
        "FLUXION_READ_WAIT": "0.5",
        "FLUXION_WRITE_WAIT": "4",
        "FLUXION_KEY_PREFIX": "tienda",
    }

    settings = Settings.from_env(env)

    assert settings.db_path == "/data/ventas.duckdb"
    assert settings.redis_url == "redis://r:6379/0"
    assert settings.admin_token == TOKEN
    assert (settings.read_wait, settings.write_wait) == (0.5, 4.0)
    assert settings.lease_config().key_prefix == "tienda"


def test_from_env_without_token_disables_admin() -> None:
    """An unset or empty admin token means None, not an empty secret."""
    assert Settings.from_env(BASE_ENV).admin_token is None
    env = {**BASE_ENV, "FLUXION_ADMIN_TOKEN": ""}
    assert Settings.from_env(env).admin_token is None


def test_missing_variables_are_named() -> None:
    """The error lists every missing required variable."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({})

    assert "FLUXION_DB" in str(caught.value)
    assert "REDIS_URL" in str(caught.value)


def test_bad_number_names_the_variable() -> None:
    """A wait that does not parse says which variable and what to write."""
    with pytest.raises(SettingsError, match="FLUXION_WRITE_WAIT='soon'"):
        Settings.from_env({**BASE_ENV, "FLUXION_WRITE_WAIT": "soon"})


def test_negative_wait_and_short_token_are_refused() -> None:
    """Values that cannot work are refused at startup, not at first use."""
    with pytest.raises(SettingsError, match="read_wait"):
        Settings(db_path="x.duckdb", redis_url="redis://r", read_wait=-1)
    with pytest.raises(SettingsError, match="FLUXION_ADMIN_TOKEN"):
        Settings(db_path="x.duckdb", redis_url="redis://r", admin_token="short")


def test_repr_masks_redis_password_and_admin_token() -> None:
    """Neither secret appears in the repr, which ends up in logs."""
    settings = Settings(
        db_path="x.duckdb",
        redis_url="redis://user:hunter2@r:6379/0",
        admin_token=TOKEN,
    )

    text = repr(settings)

    assert "hunter2" not in text
    assert TOKEN not in text
    assert "redis://user:***@r:6379/0" in text


def test_to_env_round_trips() -> None:
    """A worker process rebuilds the same settings from to_env()."""
    settings = Settings(
        db_path="x.duckdb",
        redis_url="redis://r",
        admin_token=TOKEN,
        read_wait=0.25,
        key_prefix="p",
    )

    assert Settings.from_env(settings.to_env()) == settings


def test_mask_url_leaves_passwordless_urls_alone() -> None:
    """Only a password is masked; a URL without one is unchanged."""
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_url("rediss://:pw@host/1") == "rediss://:***@host/1"


def test_app_factory_reads_the_environment_at_call_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The uvicorn factory fails fast, naming what is missing; no I/O yet."""
    monkeypatch.delenv("FLUXION_DB", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(SettingsError, match="FLUXION_DB"):
        app_from_env()

    monkeypatch.setenv("FLUXION_DB", "/nowhere/ventas.duckdb")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert app_from_env().state.settings.db_path == "/nowhere/ventas.duckdb"


def test_serve_refuses_zero_workers_and_routes_our_logs() -> None:
    """Worker count is checked; backend and lockmanager logs get a handler."""
    settings = Settings(db_path="x.duckdb", redis_url="redis://r")
    with pytest.raises(ValueError, match="workers"):
        run(settings, workers=0)

    loggers = logging_config()["loggers"]
    assert loggers["backend"]["handlers"] == loggers["lockmanager"]["handlers"]
