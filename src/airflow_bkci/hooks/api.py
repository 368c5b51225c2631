"""A client for the ``/bkci`` routes of an Airflow API server, from an Airflow connection.

The connection (any type; ``http`` is natural) holds the API server's base URL
in host (``http://airflow-api:8080``, or host and port with schema), and
either a token in extra (``{"token": "<jwt>"}``) or a login and password that
``POST /auth/token`` turns into one (Airflow's simple and FAB auth managers
both serve it). Extra ``timeout`` (seconds, default 60) bounds each request.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from airflow.sdk import BaseHook

from airflow_bkci.exceptions import BkciError, ConfigError

__all__ = ["BkciApiClient", "BkciApiError"]

log = logging.getLogger(__name__)

CANCEL_PATH = "/bkci/v1/builds/cancel"


class BkciApiError(BkciError):
    """The API answered with an error; ``status`` tells a refusal (4xx) from a fault (5xx)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}")

    @property
    def is_refusal(self) -> bool:
        return 400 <= self.status < 500 and self.status not in (408, 429)


def _detail(response: requests.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:500]
    if isinstance(detail, dict):
        return str(detail.get("message") or detail)
    return str(detail)


class BkciApiClient:
    """Calls the plugin's routes as the connection's user."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        login: str | None = None,
        password: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"the API server URL {base_url!r} needs http:// or https://")
        if not token and not login:
            raise ConfigError("give the connection a token (extra) or a login and password")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._login = login
        self._password = password
        self.timeout = timeout
        self._http = requests.Session()

    @classmethod
    def from_connection(cls, conn_id: str) -> BkciApiClient:
        conn = BaseHook.get_connection(conn_id)
        extra = conn.extra_dejson or {}
        host = (conn.host or "").rstrip("/")
        if host and "://" not in host:
            host = f"{conn.schema or 'http'}://{host}"
        if host and conn.port and host.count(":") < 2:
            host = f"{host}:{conn.port}"
        if not host:
            raise ConfigError(f"connection {conn_id!r} has no host: set the API server's URL")
        return cls(
            host,
            token=extra.get("token"),
            login=conn.login,
            password=conn.password,
            timeout=float(extra.get("timeout", 60.0)),
        )

    def bearer_token(self) -> str:
        """The token requests carry: the connection's own, else one from logging in (once).

        Raises :class:`BkciApiError` when the login is refused, and requests'
        errors when the API server cannot be reached. Quality gates read with it.
        """
        return self._bearer()

    def _bearer(self) -> str:
        if not self._token:
            resp = self._http.post(
                f"{self.base_url}/auth/token",
                json={"username": self._login, "password": self._password or ""},
                timeout=self.timeout,
            )
            if not resp.ok:
                raise BkciApiError(resp.status_code, f"login as {self._login!r}: {_detail(resp)}")
            self._token = str(resp.json()["access_token"])
        return self._token

    def close(self) -> None:
        """Close the pooled HTTP session."""
        self._http.close()

    def cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /bkci/v1/builds/cancel``; raises :class:`BkciApiError` on an error answer."""
        resp = self._http.post(
            f"{self.base_url}{CANCEL_PATH}",
            json=body,
            headers={"Authorization": f"Bearer {self._bearer()}"},
            timeout=self.timeout,
        )
        if not resp.ok:
            raise BkciApiError(resp.status_code, _detail(resp))
        result: dict[str, Any] = resp.json()
        return result
