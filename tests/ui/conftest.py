"""The browser tests' own `accelflow server` and model repository (the fixtures of the server tests)."""

from tests.flows.service.test_server import repo, service  # noqa: F401 - pytest finds fixtures by name
