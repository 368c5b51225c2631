"""The status store's tables, on their own MetaData so Airflow's never sees them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VERSION_TABLE = "bkci_alembic_version"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every database.

    SQLite has no time zone type: it stores the naive UTC value and we put
    UTC back on the way out, so callers never see a naive datetime.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone; the store only takes aware datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


JSONDoc = JSON().with_variant(JSONB(), "postgresql")
# Python None is SQL NULL here, not JSON null: "no value" is one thing to filter on.
NullableJSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only autoincrements an INTEGER PRIMARY KEY, PostgreSQL wants 64 bits.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PipelineRow(Base):
    """One row per DAG: the lock and counter for its build numbers."""

    __tablename__ = "bkci_pipeline"

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    last_build_num: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BuildRow(Base):
    """One row per DAG run: the lock for its nodes, its document and summary."""

    __tablename__ = "bkci_build"
    __table_args__ = (
        UniqueConstraint("dag_id", "run_id"),
        UniqueConstraint("dag_id", "build_num"),
        # A pipeline's builds newest first, and each filter of the query API
        # followed by that order: every page is an index range, never a sort.
        Index(None, "dag_id", "run_after", "build_num"),
        Index(None, "dag_id", "status", "run_after", "build_num"),
        Index(None, "dag_id", "trigger_type", "run_after", "build_num"),
        Index(None, "dag_id", "triggering_user", "run_after", "build_num"),
        Index(None, "run_after"),
        Index(None, "updated_at"),
    )

    build_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dag_id: Mapped[str] = mapped_column(String(250), ForeignKey("bkci_pipeline.dag_id"))
    run_id: Mapped[str] = mapped_column(String(250))
    build_num: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    # Falls back to the time the store first saw the build, so every build sorts.
    run_after: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    document: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    # Copies of document fields the query API filters and measures on, so a
    # filter is an index range rather than a scan of JSON.
    trigger_type: Mapped[str | None] = mapped_column(String(50))
    triggering_user: Mapped[str | None] = mapped_column(String(512))
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The run's conf (a JSON object of at most listeners.rows.MAX_CONF_BYTES), for the
    # query API's conf filters. Never in the document: receivers do not get it.
    conf: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)
    # The sequence of the change set that made ``document``: read together,
    # they are a consistent snapshot. 0 until the first change.
    sequence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ChangeRow(Base):
    """One change set: the JSON Patch from a build's document at sequence-1 to sequence."""

    __tablename__ = "bkci_change"
    __table_args__ = (
        UniqueConstraint("build_id", "sequence"),
        Index(None, "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("bkci_build.build_id", ondelete="CASCADE")
    )
    dag_id: Mapped[str] = mapped_column(String(250))
    sequence: Mapped[int] = mapped_column(Integer)
    # JSON, not JSONB, on PostgreSQL: the dispatcher sends the stored text as it is.
    patch: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EndpointRow(Base):
    """Delivery state of one endpoint (a channel's connection), shared by every dispatcher."""

    __tablename__ = "bkci_endpoint"

    name: Mapped[str] = mapped_column(String(250), primary_key=True)
    gone: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The circuit as the dispatcher that last changed it saw it: dispatchers run
    # in other processes (the scheduler), and the query API reports it from here.
    circuit_state: Mapped[str] = mapped_column(
        String(20), default="closed", server_default="closed"
    )
    circuit_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    circuit_open_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    circuit_owner: Mapped[str | None] = mapped_column(String(100))
    circuit_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LaneRow(Base):
    """The outbox: what one endpoint has of one build, and when to try it next.

    A lane's pending change sets are the build's change sets after
    ``acked_seq``; a dispatcher holds the lane (``lease_owner`` until
    ``lease_until``) while it sends them, so one build's change sets never
    go to one endpoint out of order or twice at once.
    """

    __tablename__ = "bkci_lane"
    __table_args__ = (Index(None, "endpoint", "next_attempt_at"),)

    endpoint: Mapped[str] = mapped_column(String(250), primary_key=True)
    build_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("bkci_build.build_id", ondelete="CASCADE"), primary_key=True
    )
    dag_id: Mapped[str] = mapped_column(String(250))
    acked_seq: Mapped[int] = mapped_column(Integer, default=0)
    # Send a snapshot next (after a gap, a dead letter or a long backlog).
    needs_snapshot: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeadLetterRow(Base):
    """Change sets an endpoint refused for good or that ran out of retries."""

    __tablename__ = "bkci_dead_letter"
    __table_args__ = (Index(None, "endpoint", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    endpoint: Mapped[str] = mapped_column(String(250))
    build_id: Mapped[str] = mapped_column(String(64))
    dag_id: Mapped[str] = mapped_column(String(250))
    first_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NodeRow(Base):
    """Current state of one node; ``node_id`` "" is the build itself."""

    __tablename__ = "bkci_node"

    build_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("bkci_build.build_id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    task_id: Mapped[str | None] = mapped_column(String(250))
    map_index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str | None] = mapped_column(String(100))
    airflow_state: Mapped[str | None] = mapped_column(String(50))
    clear_number: Mapped[int] = mapped_column(Integer)
    try_number: Mapped[int] = mapped_column(Integer)
    removed: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[dict[str, Any]] = mapped_column(JSONDoc)  # NodeState.to_json()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TransitionRow(Base):
    """History: one row per status a node entered, at the time it entered it."""

    __tablename__ = "bkci_transition"
    __table_args__ = (
        # detail is "" rather than NULL: NULLs never collide in a unique key,
        # and this key is what keeps duplicates from several sources out.
        UniqueConstraint(
            "build_id",
            "node_id",
            "clear_number",
            "try_number",
            "to_status",
            "detail",
            name="uq_bkci_transition_event",  # the generated name passes PG's 63 chars
        ),
        Index(None, "build_id", "node_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("bkci_build.build_id", ondelete="CASCADE")
    )
    node_id: Mapped[str] = mapped_column(String(300))
    to_status: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(String(100))
    airflow_state: Mapped[str | None] = mapped_column(String(50))
    clear_number: Mapped[int] = mapped_column(Integer)
    try_number: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(100))
    seq: Mapped[int] = mapped_column(BigInteger)
    decision: Mapped[str] = mapped_column(String(20))
    stale: Mapped[bool] = mapped_column(Boolean)


class QuarantineRow(Base):
    """Records that could not be read as events, kept for a human to look at."""

    __tablename__ = "bkci_quarantine"
    __table_args__ = (Index(None, "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)


class NoticeSentRow(Base):
    """A notice, or one delivery route of it, that was claimed for sending: the sent log.

    The key is claimed (inserted) before the message goes out and deleted
    again if the delivery fails, so every dispatcher, before or after a
    restart, sends a key at most once.
    """

    __tablename__ = "bkci_notice_sent"
    __table_args__ = (Index(None, "sent_at"), Index(None, "build_id"))

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    build_id: Mapped[str | None] = mapped_column(String(64))  # None for a digest
    kind: Mapped[str] = mapped_column(String(20))  # FAILED, CANCELED, RECOVERED or DIGEST
    route: Mapped[str | None] = mapped_column(String(250))  # None: the notice as a whole
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)


class NoticeWindowRow(Base):
    """Messages a pipeline got in one rate-limit window: the count every dispatcher shares.

    A message is counted by a conditional upsert that only adds while the count
    is under the limit, so HA schedulers and restarts never let more through.
    """

    __tablename__ = "bkci_notice_window"
    __table_args__ = (Index(None, "window_start"),)

    pipeline_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    sent: Mapped[int] = mapped_column(Integer)


class NoticeHeldRow(Base):
    """A notice the rate limit held back, until its pipeline's digest went out.

    Kept in the store rather than in a dispatcher's memory: a scheduler killed
    in a storm loses none, and any dispatcher sends the digest.
    """

    __tablename__ = "bkci_notice_held"
    __table_args__ = (Index(None, "pipeline_id", "window_start"), Index(None, "held_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(400), unique=True)  # the notice's dedupe key
    pipeline_id: Mapped[str] = mapped_column(String(250))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    notice: Mapped[str] = mapped_column(Text)  # the Notice as JSON
    held_at: Mapped[datetime] = mapped_column(UTCDateTime)


metadata = Base.metadata
