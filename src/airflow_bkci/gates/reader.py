"""Build status for gates from the plugin's query API over HTTP (httpx), sync and async.

Workers and triggerers have no database in Airflow 3, so a gate reads what the
API server's ``/bkci`` app answers, as the user whose token it holds. The
protocol of each read (pages, filters the API lacks, what an error answer
means) is written once as a plan: a generator that yields requests and gets
responses. :class:`RestBuildReader` sends them with ``httpx.Client``,
:class:`AsyncRestBuildReader` with ``httpx.AsyncClient``.

Errors: 401/403 → :class:`PipelineAccessDenied`; 404 → :class:`PipelineNotFound`
or :class:`BuildNotFound`; 408, 429, 5xx, timeouts and connection errors →
:class:`ReadUnavailable` (read again later); anything else → :class:`GateReadError`.
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from airflow_bkci.exceptions import ConfigError
from airflow_bkci.gates.builds import BuildQuery, BuildSummary, Snapshot
from airflow_bkci.gates.errors import (
    BuildNotFound,
    GateReadError,
    PipelineAccessDenied,
    PipelineNotFound,
    ReadUnavailable,
)

__all__ = [
    "API_PREFIX",
    "DEFAULT_TIMEOUT",
    "MAX_BUILDS",
    "MAX_DOCUMENTS",
    "AsyncRestBuildReader",
    "RestBuildReader",
]

T = TypeVar("T")
Plan = Generator[httpx.Request, httpx.Response, T]

API_PREFIX = "/bkci"
"""Where Airflow's API server mounts the plugin's app."""

DEFAULT_TIMEOUT = 30.0
"""Seconds per request (would be ``[bkci] gate_read_timeout``)."""

PAGE_SIZE = 500
"""The query API's largest page."""

MAX_BUILDS = 10_000
"""Most builds one query may return; a window holding more is too wide for a gate."""

MAX_DOCUMENTS = 200
"""Most build documents one query reads to apply run_type, which summaries lack."""


class _QueryApi:
    """The query API's requests and what its answers mean; no I/O."""

    def __init__(self, base_url: str, token: str, prefix: str, timeout: float) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"the API server URL {base_url!r} needs http:// or https://")
        if not token:
            raise ConfigError("the gate's reader needs a token: give the connection one")
        self.root = base_url.rstrip("/") + "/" + prefix.strip("/")
        self.root = self.root.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = httpx.Timeout(timeout).as_dict()

    def request(self, path: str, params: list[tuple[str, str]] | None = None) -> httpx.Request:
        # Built by hand (no client), so the timeout goes in as the extension clients set.
        return httpx.Request(
            "GET",
            self.root + path,
            params=tuple(params or ()),
            headers=self._headers,
            extensions={"timeout": self._timeout},
        )

    # -------------------------------------------------------------- plans
    def pipelines(self) -> Plan[list[str]]:
        found: list[str] = []
        cursor: str | None = None
        while True:
            params = [("limit", str(PAGE_SIZE)), *([("cursor", cursor)] if cursor else [])]
            answer = _answer((yield self.request("/v1/pipelines", params)), "the pipelines")
            found += [p["pipeline_id"] for p in answer["pipelines"]]
            cursor = answer["next_cursor"]
            if cursor is None:
                return found

    def builds(self, query: BuildQuery) -> Plan[list[BuildSummary]]:
        found: list[BuildSummary] = []
        cursor: str | None = None
        documents = 0
        path = f"/v1/pipelines/{quote(query.pipeline, safe='')}/builds"
        while True:
            params = _list_params(query, cursor)
            response = yield self.request(path, params)
            answer = _answer(response, f"pipeline {query.pipeline!r}", pipeline=query.pipeline)
            _check_conf_applied(query, answer)
            for build in answer["builds"]:
                document = None
                if query.filters_documents and not _summary_tells(query, build):
                    documents += 1
                    if documents > MAX_DOCUMENTS:
                        raise _too_many(query, f"{MAX_DOCUMENTS} builds read for run_type")
                    document = (yield from self.snapshot(build["id"]))["document"]
                if query.matches(build, document):
                    found.append(build)
                    if query.limit is not None and len(found) >= query.limit:
                        return found
                    if len(found) >= MAX_BUILDS:
                        raise _too_many(query, f"more than {MAX_BUILDS} builds")
            cursor = answer["next_cursor"]
            if cursor is None:
                return found

    def snapshot(self, build_id: str) -> Plan[Snapshot]:
        response = yield self.request(f"/v1/builds/{quote(build_id, safe='')}")
        answer: Snapshot = _answer(response, f"build {build_id!r}", build_id=build_id)
        return answer


def _list_params(query: BuildQuery, cursor: str | None) -> list[tuple[str, str]]:
    size = PAGE_SIZE
    if query.limit is not None and not query.filters_documents:
        size = min(PAGE_SIZE, query.limit)
    params = [("limit", str(size))]
    params += [("status", s.value) for s in query.statuses]
    params += query.conf_params()  # the server's filter: lists do not show a run's conf
    if query.since is not None:
        params.append(("since", query.since.isoformat()))
    if cursor is not None:
        params.append(("cursor", cursor))
    return params


def _check_conf_applied(query: BuildQuery, answer: Any) -> None:
    """Refuse an answer that ignored the conf filter, rather than judge the wrong builds.

    Builds never show their conf, so only the answer's echo of the filter
    tells that the server applied it; an older airflow-bkci ignores it.
    """
    wanted = {name.removeprefix("conf."): text for name, text in query.conf_params()}
    if wanted and answer.get("conf") != wanted:
        raise GateReadError(
            f"the API server did not apply the conf filter of the rule on {query.pipeline!r} "
            f"(asked {wanted}, it answered for {answer.get('conf')}): upgrade airflow-bkci on "
            "the API server to a version with conf filters, or remove the conf filter"
        )


def _summary_tells(query: BuildQuery, build: BuildSummary) -> bool:
    """True when the summary itself has every field the query filters on."""
    return query.run_type is None or "run_type" in build


def _too_many(query: BuildQuery, what: str) -> GateReadError:
    return GateReadError(
        f"the rule on {query.pipeline!r} needs {what}: narrow it with a shorter window, "
        "last=N, or fewer filters"
    )


def _detail(response: httpx.Response) -> tuple[str, Any]:
    """The error's message, and the API's own detail object (None if the body is not ours)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:300], None
    if isinstance(detail, dict):
        return str(detail.get("message") or detail), detail
    return str(detail), None


def _answer(
    response: httpx.Response,
    what: str,
    *,
    pipeline: str | None = None,
    build_id: str | None = None,
) -> Any:
    """The JSON of a 200 answer; any other answer raised as the error it means."""
    code = response.status_code
    if code == 200:
        try:
            return response.json()
        except ValueError:
            raise GateReadError(
                f"{response.request.url} did not answer JSON: check the API server's base URL",
                code,
            ) from None
    message, ours = _detail(response)
    if code in (401, 403):
        dags = (ours or {}).get("dags") or []
        raise PipelineAccessDenied(pipeline or (dags[0] if dags else what), code, message)
    if code == 404 and ours is not None:
        if build_id is not None:
            raise BuildNotFound(build_id, message)
        raise PipelineNotFound(pipeline or what, message)
    if code == 404:
        raise GateReadError(
            f"no BK-CI query API at {response.request.url} (HTTP 404: {message}): check the "
            f"base URL and that airflow-provider-bkci is installed in the API server",
            code,
        )
    if code in (408, 429) or code >= 500:
        raise ReadUnavailable(
            f"reading {what}: HTTP {code}: {message}; reading again later",
            _retry_after(response),
        )
    raise GateReadError(f"reading {what}: HTTP {code}: {message}", code)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _unreachable(request: httpx.Request, exc: httpx.TransportError) -> ReadUnavailable:
    return ReadUnavailable(
        f"cannot reach the API server for {request.url} ({type(exc).__name__}: {exc}); "
        "reading again later"
    )


# ------------------------------------------------------------------ sync
class RestBuildReader:
    """:class:`airflow_bkci.gates.builds.BuildReader` over the query API, blocking.

    ``base_url`` is the API server (``http://airflow-api:8080``); ``client``
    lets a caller (or a test) bring its own ``httpx.Client``, left open on close.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        prefix: str = API_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        client: httpx.Client | None = None,
    ) -> None:
        self._api = _QueryApi(base_url, token, prefix, timeout)
        self._client = client or httpx.Client()
        self._owns_client = client is None

    def pipelines(self) -> list[str]:
        return self._run(self._api.pipelines())

    def builds(self, query: BuildQuery) -> list[BuildSummary]:
        return self._run(self._api.builds(query))

    def snapshot(self, build_id: str) -> Snapshot:
        return self._run(self._api.snapshot(build_id))

    def _run(self, plan: Plan[T]) -> T:
        try:
            request = next(plan)
            while True:
                try:
                    response = self._client.send(request)
                except httpx.TransportError as exc:
                    raise _unreachable(request, exc) from exc
                request = plan.send(response)
        except StopIteration as done:
            result: T = done.value
            return result

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> RestBuildReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ------------------------------------------------------------------ async
class AsyncRestBuildReader:
    """:class:`airflow_bkci.gates.builds.AsyncBuildReader` over the query API, for asyncio."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        prefix: str = API_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._api = _QueryApi(base_url, token, prefix, timeout)
        self._client = client or httpx.AsyncClient()
        self._owns_client = client is None

    async def pipelines(self) -> list[str]:
        return await self._run(self._api.pipelines())

    async def builds(self, query: BuildQuery) -> list[BuildSummary]:
        return await self._run(self._api.builds(query))

    async def snapshot(self, build_id: str) -> Snapshot:
        return await self._run(self._api.snapshot(build_id))

    async def _run(self, plan: Plan[T]) -> T:
        try:
            request = next(plan)
            while True:
                try:
                    response = await self._client.send(request)
                except httpx.TransportError as exc:
                    raise _unreachable(request, exc) from exc
                request = plan.send(response)
        except StopIteration as done:
            result: T = done.value
            return result

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncRestBuildReader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
