"""Run the backend under uvicorn, with one or several worker processes.

One worker gets the application object directly. Several workers are
separate processes that uvicorn starts from an import string, so the
settings travel through the environment and each worker rebuilds them in
`backend.app.app_from_env`, its own application edge.
"""

from __future__ import annotations

import logging
import logging.config
import os

import uvicorn

from .app import create_app
from .logging_setup import logging_config
from .settings import Settings, mask_url

__all__ = ["logging_config", "run"]

log = logging.getLogger("backend")

FACTORY = "backend.app:app_from_env"


def run(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
) -> None:
    """Serve until interrupted.

    Raises:
        ValueError: ``workers`` is below 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")

    log_config = logging_config()
    logging.config.dictConfig(log_config)
    log.info(
        "serving on http://%s:%d with %d worker(s); db %s, Redis %s",
        host,
        port,
        workers,
        settings.db_path,
        mask_url(settings.redis_url),
    )
    if workers == 1:
        app = create_app(settings)
        uvicorn.run(app, host=host, port=port, log_config=log_config)
        return

    os.environ.update(settings.to_env())
    uvicorn.run(
        FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=log_config,
    )
