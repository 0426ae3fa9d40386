"""Alembic environment: run by ``intake.migrate`` with a connection it already holds.

``intake.migrate`` passes the connection in ``config.attributes["connection"]`` so the
migration runs inside its transaction (and under its lock); the URL form is only for
running Alembic's own command line against this folder by hand.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from intake.migrate import target_metadata

config = context.config


def _render_item(kind: str, obj: Any, autogen_context: AutogenContext) -> Literal[False]:
    """sqlmodel's column types (AutoString, UTCDateTime) need ``import sqlmodel`` in the
    revision file; everything else renders as Alembic's default (False = default)."""
    if kind == "type" and type(obj).__module__.startswith("sqlmodel"):
        autogen_context.imports.add("import sqlmodel")
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
