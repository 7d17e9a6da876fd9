"""The backend's settings: one frozen object, read from the environment once.

Only the application edge (`backend.serve`, `backend.app.app_from_env`) calls
`Settings.from_env`; everything else receives the object it built. Nothing
here runs at import.

Variables:

=======================  ========  ==========================================
``FLUXION_DB``           required  path of the shared DuckDB file
``REDIS_URL``            required  ``redis://`` URL of the lease coordinator
``FLUXION_ADMIN_TOKEN``  optional  bearer token for ``/admin``; unset turns
                                   the admin endpoints off (403)
``FLUXION_READ_WAIT``    optional  seconds a read may wait for its lease
``FLUXION_WRITE_WAIT``   optional  seconds a write may wait for its lease
``FLUXION_KEY_PREFIX``   optional  first part of every Redis key
=======================  ========  ==========================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from lockmanager import LeaseConfig

__all__ = ["MIN_ADMIN_TOKEN_LENGTH", "Settings", "SettingsError", "mask_url"]

MIN_ADMIN_TOKEN_LENGTH = 16
DEFAULT_READ_WAIT = 2.0
DEFAULT_WRITE_WAIT = 3.0
DEFAULT_STARTUP_WAIT = 30.0
DEFAULT_KEY_PREFIX = "fluxion"

_REQUIRED = ("FLUXION_DB", "REDIS_URL")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the backend needs to run.

    Args:
        db_path: the DuckDB file shared with the ETL.
        redis_url: where the lease manager keeps its queue and fence.
        admin_token: bearer token for the admin endpoints, or None to
            disable them.
        read_wait: seconds a read request waits for a shared lease before
            answering 503.
        write_wait: the same for a write request and its exclusive lease.
        startup_wait: seconds the startup waits for the write lease that
            creates the schema (the ETL may hold the file for a chunk).
        key_prefix: first part of every Redis key; tests use their own.
    """

    db_path: str
    redis_url: str
    admin_token: str | None = field(default=None, repr=False)
    read_wait: float = DEFAULT_READ_WAIT
    write_wait: float = DEFAULT_WRITE_WAIT
    startup_wait: float = DEFAULT_STARTUP_WAIT
    key_prefix: str = DEFAULT_KEY_PREFIX

    def __post_init__(self) -> None:
        if not self.db_path:
            raise SettingsError("db_path is empty; set FLUXION_DB to a file path")
        if not self.redis_url:
            raise SettingsError("redis_url is empty; set REDIS_URL (redis://...)")
        for name in ("read_wait", "write_wait", "startup_wait"):
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                raise SettingsError(f"{name} must be >= 0 seconds, got {value!r}")
        token = self.admin_token
        if token is not None and len(token) < MIN_ADMIN_TOKEN_LENGTH:
            raise SettingsError(
                f"the admin token has {len(token)} characters; use at least"
                f" {MIN_ADMIN_TOKEN_LENGTH} (for example the output of"
                " `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
                " in FLUXION_ADMIN_TOKEN, or leave it unset to disable /admin"
            )

    def __repr__(self) -> str:
        token = "None" if self.admin_token is None else "'***'"
        return (
            f"Settings(db_path={self.db_path!r},"
            f" redis_url={mask_url(self.redis_url)!r}, admin_token={token},"
            f" read_wait={self.read_wait!r}, write_wait={self.write_wait!r},"
            f" startup_wait={self.startup_wait!r},"
            f" key_prefix={self.key_prefix!r})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Build the settings from environment variables.

        Raises:
            SettingsError: a required variable is missing or a number does
                not parse; the message names the variable.
        """
        missing = [name for name in _REQUIRED if not environ.get(name)]
        if missing:
            raise SettingsError(
                f"missing environment variable(s): {', '.join(missing)}."
                " Set FLUXION_DB to the DuckDB file and REDIS_URL to the"
                " lease coordinator, e.g. redis://127.0.0.1:6379/0"
            )

        return cls(
            db_path=environ["FLUXION_DB"],
            redis_url=environ["REDIS_URL"],
            admin_token=environ.get("FLUXION_ADMIN_TOKEN") or None,
            read_wait=_seconds(environ, "FLUXION_READ_WAIT", DEFAULT_READ_WAIT),
            write_wait=_seconds(environ, "FLUXION_WRITE_WAIT", DEFAULT_WRITE_WAIT),
            key_prefix=environ.get("FLUXION_KEY_PREFIX") or DEFAULT_KEY_PREFIX,
        )

    def to_env(self) -> dict[str, str]:
        """The variables that rebuild these settings in another process."""
        env = {
            "FLUXION_DB": self.db_path,
            "REDIS_URL": self.redis_url,
            "FLUXION_READ_WAIT": repr(self.read_wait),
            "FLUXION_WRITE_WAIT": repr(self.write_wait),
            "FLUXION_KEY_PREFIX": self.key_prefix,
        }
        if self.admin_token is not None:
            env["FLUXION_ADMIN_TOKEN"] = self.admin_token
        return env

    def lease_config(self) -> LeaseConfig:
        """The lease manager's configuration for this backend."""
        return LeaseConfig(key_prefix=self.key_prefix)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url

    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _seconds(environ: Mapping[str, str], var: str, default: float) -> float:
    text = environ.get(var)
    if not text:
        return default

    try:
        return float(text)
    except ValueError:
        raise SettingsError(
            f"{var}={text!r} is not a number of seconds; use e.g. {var}=2.5"
        ) from None
