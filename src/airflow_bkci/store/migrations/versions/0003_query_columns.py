"""Query API: indexed trigger type, triggering user and queue time on builds; circuit state.

Builds get copies of three document fields so the query API filters and
measures by index, and the indexes that serve a pipeline's builds newest
first under each filter. Existing builds are filled from their documents.
Endpoints get the dispatcher's circuit state, which lived only in memory.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ORDER = ["run_after", "build_num"]
_FILTERS = ("status", "trigger_type", "triggering_user")
_CHUNK = 1000


def upgrade() -> None:
    with op.batch_alter_table("bkci_build") as batch:
        batch.add_column(sa.Column("trigger_type", sa.String(50), nullable=True))
        batch.add_column(sa.Column("triggering_user", sa.String(512), nullable=True))
        batch.add_column(sa.Column("queued_at", _TS, nullable=True))
    op.drop_index("ix_bkci_build_dag_id_run_after", "bkci_build")
    op.create_index("ix_bkci_build_dag_id_run_after_build_num", "bkci_build", ["dag_id", *_ORDER])
    for column in _FILTERS:
        op.create_index(
            f"ix_bkci_build_dag_id_{column}_run_after_build_num",
            "bkci_build",
            ["dag_id", column, *_ORDER],
        )
    with op.batch_alter_table("bkci_endpoint") as batch:
        batch.add_column(
            sa.Column("circuit_state", sa.String(20), nullable=False, server_default="closed")
        )
        batch.add_column(
            sa.Column("circuit_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("circuit_open_until", _TS, nullable=True))
        batch.add_column(sa.Column("circuit_owner", sa.String(100), nullable=True))
        batch.add_column(sa.Column("circuit_changed_at", _TS, nullable=True))
    _backfill(op.get_bind())


def _backfill(conn: sa.Connection) -> None:
    """Copy the fields from every build's document, a chunk of builds at a time."""
    build = sa.table(
        "bkci_build",
        sa.column("build_id", sa.String()),
        sa.column("document", _JSON),
        sa.column("trigger_type", sa.String()),
        sa.column("triggering_user", sa.String()),
        sa.column("queued_at", _TS),
    )
    update = (
        sa.update(build)
        .where(build.c.build_id == sa.bindparam("b_id"))
        .values(
            trigger_type=sa.bindparam("b_type"),
            triggering_user=sa.bindparam("b_user"),
            queued_at=sa.bindparam("b_queued", type_=_TS),
        )
    )
    last = ""
    while True:
        rows = conn.execute(
            sa.select(build.c.build_id, build.c.document)
            .where(build.c.build_id > last)
            .order_by(build.c.build_id)
            .limit(_CHUNK)
        ).all()
        if not rows:
            return
        params = [_fields(row.build_id, row.document or {}, conn.dialect.name) for row in rows]
        conn.execute(update, [p for p in params if p is not None])
        last = rows[-1].build_id


def _fields(build_id: str, document: dict[str, Any], dialect: str) -> dict[str, Any] | None:
    trigger, user = document.get("trigger_type"), document.get("triggering_user")
    queued = _utc(document.get("queued_at"), dialect)
    if trigger is None and user is None and queued is None:
        return None
    return {
        "b_id": build_id,
        "b_type": str(trigger)[:50] if trigger is not None else None,
        "b_user": str(user)[:512] if user is not None else None,
        "b_queued": queued,
    }


def _utc(value: Any, dialect: str) -> datetime | None:
    # The same conversion as the store's UTCDateTime type at the time of writing:
    # naive UTC on SQLite, aware UTC elsewhere. A bad time only leaves the column empty.
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    parsed = parsed.astimezone(timezone.utc)
    return parsed.replace(tzinfo=None) if dialect == "sqlite" else parsed


def downgrade() -> None:
    with op.batch_alter_table("bkci_endpoint") as batch:
        for column in (
            "circuit_changed_at",
            "circuit_owner",
            "circuit_open_until",
            "circuit_failures",
            "circuit_state",
        ):
            batch.drop_column(column)
    for column in _FILTERS:
        op.drop_index(f"ix_bkci_build_dag_id_{column}_run_after_build_num", "bkci_build")
    op.drop_index("ix_bkci_build_dag_id_run_after_build_num", "bkci_build")
    op.create_index("ix_bkci_build_dag_id_run_after", "bkci_build", ["dag_id", "run_after"])
    with op.batch_alter_table("bkci_build") as batch:
        batch.drop_column("queued_at")
        batch.drop_column("triggering_user")
        batch.drop_column("trigger_type")
