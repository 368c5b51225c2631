"""The BK-CI FastAPI app, mounted by the plugin in Airflow's API server at ``/bkci``."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from fastapi import FastAPI

from airflow_bkci.model.event import StatusEvent

if TYPE_CHECKING:
    from airflow_bkci.api.routes.cancel import CancelBackend

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_ITEMS", "Lazy", "StoreProvider", "create_app"]

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_ITEMS = 5000


class IngestStore(Protocol):
    """What the ingest route needs from :class:`airflow_bkci.store.Store`."""

    def apply(self, events: Sequence[StatusEvent]) -> Any: ...

    def quarantine(self, payload: str, reason: str, source: str) -> Any: ...


def _default_store() -> IngestStore:
    from airflow_bkci.store import Store  # type: ignore[attr-defined]

    store = Store.from_conf()
    store.migrate()
    return store  # type: ignore[no-any-return]


class Lazy(Generic[T]):
    """Builds a process-wide object on first use; retries on the next call if that fails."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._made: T | None = None

    @property
    def ready(self) -> bool:
        return self._made is not None

    def get(self) -> T:
        if self._made is None:
            with self._lock:
                if self._made is None:
                    self._made = self._factory()
        return self._made


class StoreProvider(Lazy[IngestStore]):
    """The status store, opened (and migrated) on first use."""

    def __init__(self, factory: Callable[[], IngestStore] = _default_store) -> None:
        super().__init__(factory)


def _default_cancel_service() -> CancelBackend:
    from airflow_bkci.cancel import CancelService

    return CancelService.from_airflow()


def _conf_secret() -> str:
    from airflow_bkci import conf

    return conf.ingest_secret()


class Notifiable(Protocol):
    """A dispatcher, as the app sees it: started at startup, told of new change sets."""

    def start(self) -> None: ...

    def notify(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...


def _conf_dispatcher() -> Notifiable | None:
    """The API server's dispatcher when ``[bkci] dispatch_in`` names it, else None."""
    from airflow_bkci import conf

    if "api-server" not in conf.dispatch_in():
        return None
    from airflow_bkci.hooks.webhook import dispatcher_from_conf
    from airflow_bkci.store import Store

    # Store() does not connect: a store that is down only delays the first pass.
    return dispatcher_from_conf(Store.from_conf())


def _lifespan(
    dispatcher_factory: Callable[[], Notifiable | None],
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Airflow's API server enters the lifespan of every plugin app it mounts.
        try:
            dispatcher = dispatcher_factory()
        except Exception:
            log.error("bkci: no dispatcher in this API server worker", exc_info=True)
            dispatcher = None
        app.state.bkci_dispatcher = dispatcher
        if dispatcher is not None:
            dispatcher.start()
            log.info("bkci: dispatcher started in the API server (pid %d)", os.getpid())
        try:
            yield
        finally:
            if dispatcher is not None:
                dispatcher.stop()

    return lifespan


def create_app(
    *,
    store_factory: Callable[[], IngestStore] | None = None,
    secret: Callable[[], str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
    dispatcher_factory: Callable[[], Notifiable | None] = _conf_dispatcher,
    cancel_factory: Callable[[], CancelBackend] | None = None,
) -> FastAPI:
    """Build the app; the defaults read ``[bkci]`` and open the store and cancel service lazily."""
    from airflow_bkci.api.routes import (
        builds,
        cancel,
        delivery,
        health,
        ingest,
        live,
        metrics,
        pipelines,
    )
    from airflow_bkci.dashboard.routes import install as install_dashboard

    app = FastAPI(
        title="BK-CI build status",
        description="Ingest of worker records, build status and batch cancel for airflow-bkci; "
        "read-only queries of pipelines, builds, change sets, history, metrics and delivery "
        "health (docs/query-api.md); the dashboard's pages (/ui/) and data (/v1/dashboard/).",
        lifespan=_lifespan(dispatcher_factory),
    )
    app.state.bkci_dispatcher = None
    app.state.bkci_store = StoreProvider(store_factory or _default_store)
    app.state.bkci_secret = secret or _conf_secret
    app.state.bkci_max_body_bytes = max_body_bytes
    app.state.bkci_max_items = max_items
    app.state.bkci_cancel = Lazy(cancel_factory or _default_cancel_service)
    app.include_router(ingest.router)
    app.include_router(health.router)
    app.include_router(cancel.router)
    app.include_router(live.router)
    for query in (pipelines, builds, metrics, delivery):
        app.include_router(query.router)
    install_dashboard(app)
    return app
