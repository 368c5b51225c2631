"""The status store's first tables: pipelines, builds, nodes, history, quarantine.

Revision ID: 0001
Revises:
Create Date: 2026-05-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Types are spelled out here, not imported from the models: a migration must
# keep meaning what it meant when it was written.
_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "bkci_pipeline",
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("last_build_num", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("dag_id", name="pk_bkci_pipeline"),
    )
    op.create_table(
        "bkci_build",
        sa.Column("build_id", sa.String(64), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("build_num", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("run_after", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("document", _JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["dag_id"], ["bkci_pipeline.dag_id"], name="fk_bkci_build_dag_id_bkci_pipeline"
        ),
        sa.PrimaryKeyConstraint("build_id", name="pk_bkci_build"),
        sa.UniqueConstraint("dag_id", "build_num", name="uq_bkci_build_dag_id_build_num"),
        sa.UniqueConstraint("dag_id", "run_id", name="uq_bkci_build_dag_id_run_id"),
    )
    op.create_index("ix_bkci_build_dag_id_run_after", "bkci_build", ["dag_id", "run_after"])
    op.create_index("ix_bkci_build_run_after", "bkci_build", ["run_after"])
    op.create_index("ix_bkci_build_updated_at", "bkci_build", ["updated_at"])
    op.create_table(
        "bkci_node",
        sa.Column("build_id", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(300), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=True),
        sa.Column("map_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("detail", sa.String(100), nullable=True),
        sa.Column("airflow_state", sa.String(50), nullable=True),
        sa.Column("clear_number", sa.Integer(), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.Column("state", _JSON, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["bkci_build.build_id"],
            name="fk_bkci_node_build_id_bkci_build",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("build_id", "node_id", name="pk_bkci_node"),
    )
    op.create_table(
        "bkci_transition",
        sa.Column("id", _BIGID, autoincrement=True, nullable=False),
        sa.Column("build_id", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(300), nullable=False),
        sa.Column("to_status", sa.String(20), nullable=False),
        sa.Column("detail", sa.String(100), nullable=False),
        sa.Column("airflow_state", sa.String(50), nullable=True),
        sa.Column("clear_number", sa.Integer(), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["bkci_build.build_id"],
            name="fk_bkci_transition_build_id_bkci_build",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_bkci_transition"),
        sa.UniqueConstraint(
            "build_id",
            "node_id",
            "clear_number",
            "try_number",
            "to_status",
            "detail",
            name="uq_bkci_transition_event",
        ),
    )
    op.create_index(
        "ix_bkci_transition_build_id_node_id", "bkci_transition", ["build_id", "node_id"]
    )
    op.create_table(
        "bkci_quarantine",
        sa.Column("id", _BIGID, autoincrement=True, nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bkci_quarantine"),
    )
    op.create_index("ix_bkci_quarantine_received_at", "bkci_quarantine", ["received_at"])


def downgrade() -> None:
    op.drop_table("bkci_quarantine")
    op.drop_table("bkci_transition")
    op.drop_table("bkci_node")
    op.drop_table("bkci_build")
    op.drop_table("bkci_pipeline")
