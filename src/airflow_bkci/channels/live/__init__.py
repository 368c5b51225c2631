"""The live channel: build change sets pushed to WebSocket clients by each API server worker."""

from airflow_bkci.channels.live.client import ClientGone, LiveClient
from airflow_bkci.channels.live.hub import LiveHub
from airflow_bkci.channels.live.protocol import SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX, ProtocolError
from airflow_bkci.channels.live.tail import Head, StoreTail

__all__ = [
    "SUBPROTOCOL",
    "TOKEN_SUBPROTOCOL_PREFIX",
    "ClientGone",
    "Head",
    "LiveClient",
    "LiveHub",
    "ProtocolError",
    "StoreTail",
]
