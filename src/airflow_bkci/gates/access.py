"""What a gate needs to read build status: the API server's URL and a token, from a connection.

Workers and triggerers have no database in Airflow 3, so a gate reads through
the plugin's query API as the connection's user (see ``hooks/api.py`` for the
connection's fields). Getting them blocks (a connection look-up, maybe a login);
a trigger calls :func:`api_access` through ``sync_to_async``.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_bkci.exceptions import ConfigError
from airflow_bkci.gates.errors import GateConnectionError, ReadUnavailable

__all__ = ["ApiAccess", "api_access"]


@dataclass(frozen=True)
class ApiAccess:
    """The API server's base URL, a Bearer token, and seconds per request."""

    base_url: str
    token: str
    timeout: float

    def __repr__(self) -> str:  # never print the token
        return f"ApiAccess(base_url={self.base_url!r}, timeout={self.timeout})"


def api_access(conn_id: str) -> ApiAccess:
    """Read the connection and log in if it holds a login.

    Raises :class:`GateConnectionError` when the connection is missing, has no
    usable host, or its login is refused (asking again will not help), and
    :class:`ReadUnavailable` when the API server cannot answer now.
    """
    import requests
    from airflow.sdk.exceptions import AirflowNotFoundException

    from airflow_bkci.hooks.api import BkciApiClient, BkciApiError

    client: BkciApiClient | None = None
    try:
        client = BkciApiClient.from_connection(conn_id)
        token = client.bearer_token()
    except AirflowNotFoundException:
        raise GateConnectionError(conn_id, "no such connection") from None
    except ConfigError as exc:
        raise GateConnectionError(conn_id, str(exc)) from None
    except BkciApiError as exc:
        if exc.is_refusal:
            raise GateConnectionError(conn_id, f"its login was refused ({exc})") from None
        raise ReadUnavailable(f"logging in through {conn_id!r}: {exc}") from exc
    except requests.RequestException as exc:
        raise ReadUnavailable(
            f"cannot reach the API server of connection {conn_id!r} ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        if client is not None:
            client.close()  # only the token is kept; its session would leak
    return ApiAccess(client.base_url, token, client.timeout)
