"""Notifications: the sent log, one row per notice (and per delivery route) claimed for sending.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bkci_notice_sent",
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("build_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("route", sa.String(250), nullable=True),
        sa.Column("sent_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_bkci_notice_sent"),
    )
    op.create_index("ix_bkci_notice_sent_sent_at", "bkci_notice_sent", ["sent_at"])
    op.create_index("ix_bkci_notice_sent_build_id", "bkci_notice_sent", ["build_id"])


def downgrade() -> None:
    op.drop_table("bkci_notice_sent")
