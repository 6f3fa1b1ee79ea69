"""Prefect's embedded server (no PREFECT_API_URL): started once, with time to spare.

Prefect starts a temporary server on SQLite the first time a flow or a client needs one,
and gives it 20 s by default. On a fresh machine it first creates and migrates its database,
and on 2 busy cores that sometimes takes longer: the user then got a traceback and lost the
task. Here it gets STARTUP_TIMEOUT seconds and one more try, and a failure is one line.
"""

from __future__ import annotations

import os

from accelflow.core.errors import AccelflowError

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_TIMEOUT = "90"
ATTEMPTS = 2


class EmbeddedServerError(AccelflowError):
    """Prefect's embedded server did not start."""


def prefer_patient_startup() -> None:
    """Before Prefect reads its settings: a start-up timeout that fits a slow first start."""
    os.environ.setdefault(STARTUP_TIMEOUT_ENV, STARTUP_TIMEOUT)


def ensure_started() -> None:
    """Start the embedded server now (a no-op when PREFECT_API_URL names a server, or it runs)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    for _ in range(ATTEMPTS):
        server = SubprocessASGIServer()
        try:
            server.start()
            return
        except RuntimeError:
            server.stop()  # its process may still be migrating: end it before the next try
    timeout = os.environ.get(STARTUP_TIMEOUT_ENV, STARTUP_TIMEOUT)
    raise EmbeddedServerError(
        f"Prefect's embedded server did not start within {timeout} s ({ATTEMPTS} tries). Prepare its "
        "database once with `prefect server database upgrade -y` and run again, or give it longer with "
        f"{STARTUP_TIMEOUT_ENV}=300, or run `accelflow server` and export the PREFECT_API_URL it prints."
    )
