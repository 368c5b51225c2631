"""Conf filters: each build keeps its run's conf, outside the document.

The query API filters a pipeline's builds by top-level keys of the run's conf
(``?conf.branch=main``). Builds stored before keep NULL: the status store
never had their conf, and a build document never carries it.

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-11
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("bkci_build") as batch:
        batch.add_column(sa.Column("conf", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bkci_build") as batch:
        batch.drop_column("conf")
