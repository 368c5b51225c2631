"""``/v1/live``: build change sets pushed over a WebSocket, as the webhook's CloudEvents.

A connection authenticates once with an Airflow token (subprotocol
``bearer.<jwt>`` or the UI's ``_token`` cookie, never the query string, which
access logs keep), then subscribes to pipelines and builds. Every subscribe
and every token refresh is checked against the DAGs the user may read. The
protocol is in :mod:`airflow_bkci.channels.live.protocol` and ``docs/live.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from airflow_bkci.api.live_access import (
    AirflowLiveAccess,
    Authenticated,
    LiveAccess,
    NotAuthenticated,
)
from airflow_bkci.channels.live import (
    SUBPROTOCOL,
    TOKEN_SUBPROTOCOL_PREFIX,
    ClientGone,
    Head,
    LiveClient,
    LiveHub,
    ProtocolError,
    StoreTail,
)
from airflow_bkci.channels.live.protocol import (
    Auth,
    Close,
    Ping,
    Subscribe,
    Unsubscribe,
    control,
    parse,
)

__all__ = ["LiveSettings", "router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["live"])

_QUERY_TOKENS = frozenset({"token", "access_token", "jwt", "auth"})
_CLOSE_WAIT = 2.0
_ids = itertools.count(1)


@dataclass(frozen=True)
class LiveSettings:
    poll_interval: float = 0.1
    heartbeat: float = 15.0
    client_buffer: int = 1000
    max_subscriptions: int = 1000
    source: str = "/airflow-bkci"

    @classmethod
    def from_conf(cls) -> LiveSettings:
        from airflow_bkci import conf

        return cls(
            poll_interval=conf.live_poll_interval(),
            heartbeat=conf.live_heartbeat(),
            client_buffer=conf.live_client_buffer(),
            max_subscriptions=conf.live_max_subscriptions(),
            source=conf.event_source(),
        )


def _settings(app: Any) -> LiveSettings:
    settings = getattr(app.state, "bkci_live_settings", None)
    if settings is None:
        settings = LiveSettings.from_conf()
        app.state.bkci_live_settings = settings
    return settings  # type: ignore[no-any-return]


async def _hub(app: Any) -> LiveHub:
    hub = getattr(app.state, "bkci_live", None)
    if hub is None:
        store = await asyncio.to_thread(app.state.bkci_store.get)  # opens and migrates once
        settings = _settings(app)
        hub = getattr(app.state, "bkci_live", None)
        if hub is None:
            hub = LiveHub(
                StoreTail(store), source=settings.source, poll_interval=settings.poll_interval
            )
            app.state.bkci_live = hub
    return hub  # type: ignore[no-any-return]


def _access(app: Any) -> LiveAccess:
    access = getattr(app.state, "bkci_live_access", None)
    if access is None:
        access = AirflowLiveAccess()
        app.state.bkci_live_access = access
    return access  # type: ignore[no-any-return]


@router.websocket("/v1/live")
async def live(websocket: WebSocket) -> None:
    offered = list(websocket.scope.get("subprotocols") or [])
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    if _QUERY_TOKENS & set(websocket.query_params):
        await _refuse(
            websocket,
            Close.TOKEN_IN_QUERY,
            "token_in_query",
            "a token in the query string ends up in access logs; offer the subprotocol "
            "'bearer.<jwt>' (next to 'bkci.v1') or use the '_token' cookie instead",
        )
        return
    token = next(
        (
            p[len(TOKEN_SUBPROTOCOL_PREFIX) :]
            for p in offered
            if p.startswith(TOKEN_SUBPROTOCOL_PREFIX)
        ),
        None,
    ) or websocket.cookies.get("_token")
    access = _access(websocket.app)
    try:
        who = await access.authenticate(token)
    except NotAuthenticated as exc:
        await _refuse(websocket, Close.UNAUTHENTICATED, "unauthenticated", str(exc))
        return
    settings = _settings(websocket.app)
    hub = await _hub(websocket.app)
    session = _Session(websocket, hub, access, who, settings)
    await session.serve()


async def _refuse(websocket: WebSocket, code: int, error: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(control("error", code=error, message=message))
        await websocket.close(code=code, reason=message[:120])


class _Session:
    """One connection: reads client messages and acts on them; its client sends."""

    def __init__(
        self,
        websocket: WebSocket,
        hub: LiveHub,
        access: LiveAccess,
        who: Authenticated,
        settings: LiveSettings,
    ) -> None:
        self.websocket = websocket
        self.hub = hub
        self.access = access
        self.who = who
        self.settings = settings
        self.client = LiveClient(
            websocket.send_text,
            name=f"{who.name}#{next(_ids)}",
            buffer=settings.client_buffer,
            heartbeat=settings.heartbeat,
            expires_at=_deadline(who.expires_at),
        )
        self.build_pipelines: dict[str, str] = {}

    async def serve(self) -> None:
        pump = self.client.start(self.hub)
        self.hub.add(self.client)
        reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.hub.remove(self.client)
            for task in (pump, reader):
                task.cancel()
            await asyncio.gather(pump, reader, return_exceptions=True)
        gone = self.client.gone
        if gone is not None:
            await self._close(gone)

    async def _close(self, gone: ClientGone) -> None:
        if self.websocket.client_state is not WebSocketState.CONNECTED:
            return
        with contextlib.suppress(Exception):
            # A client that does not read may never take these: do not wait for it.
            if gone.frame is not None:
                await asyncio.wait_for(self.websocket.send_text(gone.frame), _CLOSE_WAIT)
            await asyncio.wait_for(self.websocket.close(gone.code, gone.reason), _CLOSE_WAIT)

    async def _read(self) -> None:
        while True:
            try:
                message = await self.websocket.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            try:
                request = parse(raw, self.settings.max_subscriptions)
                await self._handle(request)
            except ProtocolError as exc:
                self.client.tell(exc.frame())

    async def _handle(self, request: Subscribe | Unsubscribe | Auth | Ping) -> None:
        if isinstance(request, Subscribe):
            await self._subscribe(request)
        elif isinstance(request, Unsubscribe):
            self._unsubscribe(request)
        elif isinstance(request, Auth):
            await self._reauthenticate(request.token)
        else:
            self.client.tell(control("pong"))

    async def _subscribe(self, request: Subscribe) -> None:
        tail = self.hub.tail
        heads = await asyncio.to_thread(tail.heads, list(request.builds))
        unknown_builds = sorted(set(request.builds) - set(heads))
        pipelines = set(request.pipelines)
        known = await asyncio.to_thread(tail.known_pipelines, pipelines)
        if pipelines - known:
            known |= await self.access.existing(pipelines - known)
        unknown_pipelines = sorted(pipelines - known)
        if unknown_builds or unknown_pipelines:
            raise ProtocolError(
                "not_found",
                "nothing subscribed: "
                + "; ".join(
                    part
                    for part in (
                        f"unknown builds {unknown_builds}" if unknown_builds else "",
                        f"unknown pipelines {unknown_pipelines}" if unknown_pipelines else "",
                    )
                    if part
                ),
                builds=unknown_builds,
                pipelines=unknown_pipelines,
            )
        dags = pipelines | {head.pipeline_id for head in heads.values()}
        denied = await self.access.denied(self.who, dags)
        if denied:
            raise ProtocolError(
                "forbidden",
                f"nothing subscribed: you may not read the DAGs {denied}",
                pipelines=denied,
            )
        beyond = {
            b: {"sent": last, "current": heads[b].sequence}
            for b, last in request.builds.items()
            if last is not None and last > heads[b].sequence
        }
        if beyond:
            raise ProtocolError(
                "sequence_beyond",
                "nothing subscribed: you name sequences the builds have not reached; resubscribe "
                "with null for these builds to get a snapshot",
                builds=beyond,
            )
        active = await asyncio.to_thread(tail.active, pipelines)
        self._register(request, heads, pipelines, active)

    def _register(
        self,
        request: Subscribe,
        heads: dict[str, Head],
        pipelines: set[str],
        active: list[Head],
    ) -> None:
        # No await in here: the tailer cannot move a build between our reads' use and the
        # registration; what it saw meanwhile is caught up with known_head below.
        client = self.client
        client.pipelines |= pipelines
        client.builds |= set(request.builds)
        self.build_pipelines.update({b: heads[b].pipeline_id for b in request.builds})
        client.tell(
            control(
                "subscribed",
                pipelines=sorted(pipelines),
                builds={b: heads[b].sequence for b in sorted(request.builds)},
                worker=os.getpid(),  # which API server worker process serves this connection
            )
        )
        for build_id, last in request.builds.items():
            client.need(self._latest(heads[build_id]), have=last, snapshot=last is None)
        for head in active:
            if head.build_id not in request.builds and head.build_id not in client.have:
                client.need(self._latest(head), snapshot=True)

    def _latest(self, head: Head) -> Head:
        known = self.hub.known_head(head.build_id)
        if known is not None and known > head.sequence:
            return Head(head.build_id, head.pipeline_id, known)
        return head

    def _unsubscribe(self, request: Unsubscribe) -> None:
        client = self.client
        client.pipelines -= set(request.pipelines)
        client.builds -= set(request.builds)
        for build_id in request.builds:
            self.build_pipelines.pop(build_id, None)
        client.forget_unfollowed()
        client.tell(
            control("unsubscribed", pipelines=list(request.pipelines), builds=list(request.builds))
        )

    async def _reauthenticate(self, token: str) -> None:
        try:
            who = await self.access.authenticate(token)
        except NotAuthenticated as exc:
            raise ProtocolError(
                "unauthenticated", f"token refused, the old one stays: {exc}"
            ) from None
        self.who = who
        self.client.expires_at = _deadline(who.expires_at)
        followed = self.client.pipelines | set(self.build_pipelines.values())
        denied = set(await self.access.denied(who, followed))
        if denied:
            lost = Unsubscribe(
                tuple(sorted(self.client.pipelines & denied)),
                tuple(sorted(b for b, p in self.build_pipelines.items() if p in denied)),
            )
            self._unsubscribe(lost)
            self.client.tell(
                control(
                    "error",
                    code="forbidden",
                    message=f"you may no longer read the DAGs {sorted(denied)}; "
                    "their subscriptions ended",
                    pipelines=sorted(denied),
                )
            )
        self.client.tell(control("authenticated", user=who.name, expires_in=_left(who.expires_at)))


def _deadline(expires_at: float | None) -> float | None:
    """A token's expiry on the monotonic clock the client's sender uses."""
    if expires_at is None:
        return None
    return time.monotonic() + (expires_at - time.time())


def _left(expires_at: float | None) -> float | None:
    return None if expires_at is None else round(expires_at - time.time(), 1)
