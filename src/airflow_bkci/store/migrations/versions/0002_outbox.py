"""Change sets, per-build sequence, and the outbox: endpoints, lanes, dead letters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("bkci_build") as batch:
        batch.add_column(sa.Column("sequence", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "bkci_change",
        sa.Column("id", _BIGID, autoincrement=True, nullable=False),
        sa.Column("build_id", sa.String(64), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        # Plain JSON (text) even on PostgreSQL: a patch is never queried inside,
        # and the dispatcher reads its text back as it was written.
        sa.Column("patch", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["bkci_build.build_id"],
            name="fk_bkci_change_build_id_bkci_build",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_bkci_change"),
        sa.UniqueConstraint("build_id", "sequence", name="uq_bkci_change_build_id_sequence"),
    )
    op.create_index("ix_bkci_change_created_at", "bkci_change", ["created_at"])
    op.create_table(
        "bkci_endpoint",
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("gone", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_bkci_endpoint"),
    )
    op.create_table(
        "bkci_lane",
        sa.Column("endpoint", sa.String(250), nullable=False),
        sa.Column("build_id", sa.String(64), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("acked_seq", sa.Integer(), nullable=False),
        sa.Column("needs_snapshot", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["bkci_build.build_id"],
            name="fk_bkci_lane_build_id_bkci_build",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("endpoint", "build_id", name="pk_bkci_lane"),
    )
    op.create_index(
        "ix_bkci_lane_endpoint_next_attempt_at", "bkci_lane", ["endpoint", "next_attempt_at"]
    )
    op.create_table(
        "bkci_dead_letter",
        sa.Column("id", _BIGID, autoincrement=True, nullable=False),
        sa.Column("endpoint", sa.String(250), nullable=False),
        sa.Column("build_id", sa.String(64), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("events", _JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("replayed_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bkci_dead_letter"),
    )
    op.create_index(
        "ix_bkci_dead_letter_endpoint_created_at", "bkci_dead_letter", ["endpoint", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("bkci_dead_letter")
    op.drop_table("bkci_lane")
    op.drop_table("bkci_endpoint")
    op.drop_table("bkci_change")
    with op.batch_alter_table("bkci_build") as batch:
        batch.drop_column("sequence")
