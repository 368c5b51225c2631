"""Alembic environment for the status store: only ever run through Store.migrate()."""

from __future__ import annotations

from alembic import context

from airflow_bkci.store.tables import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "The bkci store migrations run only with a connection passed in; "
        "use airflow_bkci.store.Store(url).migrate() instead of the alembic command line."
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    # Store.migrate() holds one transaction (and its lock) around everything.
    transactional_ddl=True,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
