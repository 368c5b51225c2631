"""Notification rate limit in the store: counts per pipeline and window, and held notices.

Before, each dispatcher counted in its own memory: two HA schedulers let twice
the limit through, and a scheduler stopped or killed in a storm lost the
notices it held for the digest.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bkci_notice_window",
        sa.Column("pipeline_id", sa.String(250), nullable=False),
        sa.Column("window_start", _TS, nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("pipeline_id", "window_start", name="pk_bkci_notice_window"),
    )
    op.create_index("ix_bkci_notice_window_window_start", "bkci_notice_window", ["window_start"])
    op.create_table(
        "bkci_notice_held",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("pipeline_id", sa.String(250), nullable=False),
        sa.Column("window_start", _TS, nullable=False),
        sa.Column("notice", sa.Text(), nullable=False),
        sa.Column("held_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bkci_notice_held"),
        sa.UniqueConstraint("key", name="uq_bkci_notice_held_key"),
    )
    op.create_index(
        "ix_bkci_notice_held_pipeline_id_window_start",
        "bkci_notice_held",
        ["pipeline_id", "window_start"],
    )
    op.create_index("ix_bkci_notice_held_held_at", "bkci_notice_held", ["held_at"])


def downgrade() -> None:
    op.drop_table("bkci_notice_held")
    op.drop_table("bkci_notice_window")
