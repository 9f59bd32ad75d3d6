"""Fixtures of the plant-database tests (`pytest_plugins = ["plant_fixtures"]`): the session's PostgreSQL server
and a freshly migrated plant database per test."""

from __future__ import annotations

import pytest
from pg_server import pg_server  # noqa: F401  (registered with this plugin)
from plant_data import PlantDb

from app.store.postgres import migrate


@pytest.fixture
def plant_db(pg_server) -> PlantDb:  # noqa: F811
    db = PlantDb(pg_server, pg_server.create_database())
    with db.owner() as conn:
        migrate(conn)
    return db
