"""``POST /ingest``: worker records in, status events into the store.

Per-item problems come back in a 200 answer so the sender acks the good rows
and quarantines the bad ones; a problem with the whole request (secret, size,
store down) is an error status and the sender keeps every row.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from airflow_bkci.api.errors import RETRY_AFTER_SECONDS, is_connection_error
from airflow_bkci.api.schemas import IngestResponse, RejectedItem
from airflow_bkci.exceptions import BkciError, InvalidEvent
from airflow_bkci.model.event import StatusEvent
from airflow_bkci.spool.records import record_to_event

log = logging.getLogger(__name__)

router = APIRouter(tags=["ingest"])


def _unavailable(reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"status store unavailable: {reason}; keep the records and retry",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _check_secret(request: Request, authorization: str | None) -> None:
    try:
        expected = request.app.state.bkci_secret()
    except BkciError as exc:
        log.error("BK-CI ingest cannot check requests: %s", exc)
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR, detail=f"ingest is not configured: {exc}"
        ) from None
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing 'Authorization: Bearer <[bkci] ingest_secret>' header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="wrong ingest secret: set [bkci] ingest_secret to the same value "
            "on API servers and workers",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"request body over {limit} bytes; send smaller batches",
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes, max_items: int) -> list[Any]:
    try:
        records = json.loads(body)
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=f"body is not JSON: {exc}"
        ) from None
    if not isinstance(records, list):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"body must be a JSON list of records, got {type(records).__name__}",
        )
    if len(records) > max_items:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"{len(records)} records in one request; the limit is {max_items}",
        )
    return records


def _source_of(record: Any) -> str:
    source = record.get("source") if isinstance(record, dict) else None
    return source[:250] if isinstance(source, str) and source else "unknown"


def _store_batch(
    store: Any,
    valid: list[tuple[int, StatusEvent]],
    invalid: list[tuple[int, Any, str]],
) -> list[RejectedItem]:
    rejected: list[RejectedItem] = []
    for index, record, reason in invalid:
        payload = json.dumps(record, default=str)
        store.quarantine(payload, reason, _source_of(record))
        rejected.append(RejectedItem(index=index, reason=reason))
    if valid:
        result = store.apply([event for _, event in valid])
        index_of = {id(event): index for index, event in valid}
        for event, reason in getattr(result, "rejected", None) or []:
            position = index_of.get(id(event))
            if position is not None:
                rejected.append(RejectedItem(index=position, reason=str(reason)))
    return sorted(rejected, key=lambda item: item.index)


@router.post(
    "/ingest",
    response_model=IngestResponse,
    responses={
        401: {"description": "Missing or wrong ingest secret"},
        413: {"description": "Body or batch too large"},
        503: {"description": "Status store unavailable; retry after Retry-After"},
    },
)
async def ingest(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> IngestResponse:
    """Take a JSON list of worker records; answer which ones were refused and why."""
    _check_secret(request, authorization)
    state = request.app.state
    records = _parse(await _read_body(request, state.bkci_max_body_bytes), state.bkci_max_items)
    valid: list[tuple[int, StatusEvent]] = []
    invalid: list[tuple[int, Any, str]] = []
    for index, record in enumerate(records):
        try:
            valid.append((index, record_to_event(record)))
        except InvalidEvent as exc:
            invalid.append((index, record, exc.reason))
        except ValueError as exc:  # the model's own checks
            invalid.append((index, record, str(exc)))
    try:
        store = await run_in_threadpool(state.bkci_store.get)
    except Exception as exc:  # not opened yet: whatever the cause, try again later
        log.warning("BK-CI ingest: cannot open the status store", exc_info=True)
        raise _unavailable(f"{type(exc).__name__}: {exc}") from None
    try:
        rejected = await run_in_threadpool(_store_batch, store, valid, invalid)
    except Exception as exc:
        if is_connection_error(exc):
            log.warning("BK-CI ingest: status store unavailable", exc_info=True)
            raise _unavailable(f"{type(exc).__name__}: {exc}") from None
        raise
    if valid and state.bkci_dispatcher is not None:
        state.bkci_dispatcher.notify()  # new change sets, maybe: no need to wait for a poll
    if invalid:
        log.warning(
            "BK-CI ingest quarantined %d of %d records: %s",
            len(invalid),
            len(records),
            "; ".join(f"#{i}: {why}" for i, _, why in invalid[:5]),
        )
    return IngestResponse(accepted=len(records) - len(rejected), rejected=rejected)
