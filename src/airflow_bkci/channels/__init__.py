"""Outbound channels: the wire format of build events, its signing, and a reference consumer."""

from airflow_bkci.channels.consumer import BuildMirror, Gap, Outcome, Result, parse_body
from airflow_bkci.channels.envelope import (
    CONTENT_TYPE,
    CONTENT_TYPE_BATCH,
    EVENT_CHANGED,
    EVENT_SNAPSHOT,
    SPEC_VERSION,
    batch_id,
    change_event,
    encode_batch,
    encode_event,
    event_id,
    snapshot_event,
    validate_data,
    validate_event,
)
from airflow_bkci.channels.signing import WebhookSigner, generate_secret

__all__ = [
    "CONTENT_TYPE",
    "CONTENT_TYPE_BATCH",
    "EVENT_CHANGED",
    "EVENT_SNAPSHOT",
    "SPEC_VERSION",
    "BuildMirror",
    "Gap",
    "Outcome",
    "Result",
    "WebhookSigner",
    "batch_id",
    "change_event",
    "encode_batch",
    "encode_event",
    "event_id",
    "generate_secret",
    "parse_body",
    "snapshot_event",
    "validate_data",
    "validate_event",
]
