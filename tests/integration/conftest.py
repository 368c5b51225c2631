"""Session-wide Airflow stacks (SQLite and PostgreSQL) and one run of every example DAG on each."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from airflow_bkci.devstack import AirflowStack
from airflow_bkci.example_dags import EXPECTED_STATES, FOLDER
from airflow_bkci.store import Store
from tests.integration.auth_manager import LIMITED_PASSWORD, LIMITED_USER
from tests.ordering import LAST_USER
from tests.proxy import TcpProxy
from tests.services import require_postgres
from tests.unit.notify.receivers import SmtpReceiver
from tests.webhook import ReceiverProcess

TEST_DAGS = Path(__file__).parent / "dags"
REPO = Path(__file__).parents[2]

RUN_TIMEOUT = 240.0

ExampleRuns = dict[str, tuple[str, str]]


INGEST_SECRET = "integration-tests-ingest-secret"

# Who hears about which example pipeline (the SQLite stack's notifications).
OWNERS = """\
bkci_failure           failure-team@example.test
bkci_failure/deploy    deploy-owner@example.test
bkci_failure/verify    verify-owner@example.test
bkci_retry             retry-team@example.test
"""


class FaultableStack:
    """A started stack plus the proxies that tests cut to make faults."""

    def __init__(self, stack: AirflowStack, ingest: TcpProxy, store: TcpProxy | None) -> None:
        self.stack = stack
        self.ingest_proxy = ingest
        self.store_proxy = store


def _stack(home: Path, backend: str) -> Iterator[AirflowStack]:
    dags = home / "dags"
    dags.mkdir()
    for source in [*FOLDER.glob("bkci_*.py"), *TEST_DAGS.glob("bkci_*.py")]:
        shutil.copy(source, dags / source.name)
    # A real webhook receiver, in its own process, gets every change set the
    # schedulers' dispatchers send; retries are quick so fault tests settle fast.
    receiver = ReceiverProcess(home / "receiver")
    hook = {"conn_type": "bkci_webhook", "host": receiver.url, "password": receiver.secret}
    # The Airflow processes import the test auth manager from this repository.
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    stack = AirflowStack(
        home=home,
        dags_folder=dags,
        backend=backend,
        env={"AIRFLOW_CONN_BKCI_TEST_HOOK": json.dumps(hook), "PYTHONPATH": python_path},
    )
    _configure_users(stack, home)
    # BatchCancelOperator's connection to this stack's API server
    api = {"conn_type": "http", "host": stack.api_url, "login": "admin", "password": "admin"}
    stack.set_env("AIRFLOW_CONN_BKCI_API", json.dumps(api))
    stack.configure("bkci", "webhook_conn_ids", "bkci_test_hook")
    stack.configure("bkci", "retry_schedule", "0.2,0.5,1,1,1,1,1,1,1,1")
    # Workers reach the ingest route, and the collectors the PostgreSQL store,
    # through proxies that fault tests cut; Airflow's own database is direct.
    ingest = TcpProxy("127.0.0.1", stack.port)
    stack.configure("bkci", "ingest_url", f"http://127.0.0.1:{ingest.port}/bkci/ingest")
    stack.configure("bkci", "ingest_secret", INGEST_SECRET)
    stack.configure("bkci", "forward_timeout", "1.0")
    store = None
    mail = None
    if backend == "sqlite":
        # Task runners send their spool through the ingest route (as on a host
        # without a scheduler) so the fault tests can cut it; on PostgreSQL the
        # scheduler reads the spool of its host, the default.
        stack.configure("bkci", "spool_poll_interval", "0")
        mail = _notify_owners(stack, home)
    else:
        url = make_url(stack.db_url)
        store = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        store_url = url.set(drivername="postgresql+psycopg", host="127.0.0.1", port=store.port)
        stack.configure("bkci", "store_url", store_url.render_as_string(hide_password=False))
        # short, so a fault test can outlast it (see test_faults)
        stack.configure("bkci", "recent_window", "3")
        # On PostgreSQL the API server dispatches too: lanes are shared by claim.
        stack.configure("bkci", "dispatch_in", "scheduler,api-server")
        # Two API server workers, as in production: each has its own dispatcher and
        # its own live tailer, and a WebSocket client may land on either.
        stack.configure("api", "workers", "2")
    t0 = time.monotonic()
    try:
        with stack:
            stack.started_in = time.monotonic() - t0  # type: ignore[attr-defined]
            stack.faults = FaultableStack(stack, ingest, store)  # type: ignore[attr-defined]
            stack.receiver = receiver  # type: ignore[attr-defined]
            stack.mail = mail  # type: ignore[attr-defined]
            yield stack
    finally:
        receiver.stop()
        if mail is not None:
            mail.stop()
        ingest.close()
        if store is not None:
            store.close()


def _notify_owners(stack: AirflowStack, home: Path) -> SmtpReceiver:
    """Owner notifications of every run on this stack, mailed to an SMTP server of its own.

    The example runs the session makes anyway are what the notification tests
    read: no Airflow run is added for them.
    """
    mail = SmtpReceiver(home / "smtp")
    stack.set_env("AIRFLOW_CONN_BKCI_TEST_SMTP", json.dumps(mail.connection()))
    owners = home / "bkci-owners"
    owners.write_text(OWNERS)
    stack.configure("bkci", "notify_owners_file", str(owners))
    stack.configure("bkci", "notify_email_conn_id", "bkci_test_smtp")
    # other tests fail bkci_failure again and again; none of that may become a digest
    stack.configure("bkci", "notify_rate_limit", "1000")
    return mail


def _configure_users(stack: AirflowStack, home: Path) -> None:
    """Real users, so requests without a token are refused (all-admins lets everything in).

    ``admin``/``admin`` keeps ``stack.token()`` working; ``LIMITED_USER`` may not
    change ``bkci_cancel_teardown`` (see ``auth_manager.py``).
    """
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({"admin": "admin", LIMITED_USER: LIMITED_PASSWORD}))
    stack.configure("core", "auth_manager", "tests.integration.auth_manager.RestrictedAuthManager")
    stack.configure("core", "simple_auth_manager_all_admins", "False")
    stack.configure("core", "simple_auth_manager_users", f"admin:admin,{LIMITED_USER}:user")
    stack.configure("core", "simple_auth_manager_passwords_file", str(passwords))


def run_examples(stack: AirflowStack) -> ExampleRuns:
    """Trigger every example DAG at once and wait for all: {dag_id: (run_id, final state)}."""
    runs = {dag_id: stack.trigger(dag_id) for dag_id in EXPECTED_STATES}
    return {d: (r, stack.wait_run(d, r, timeout=RUN_TIMEOUT)) for d, r in runs.items()}


# Stacks that stop after the last test that needs them (see tests/ordering.py),
# not at the end of the session.
_RUNNING: dict[str, ExitStack] = {}


def _session_stack(
    tmp_path_factory: pytest.TempPathFactory, backend: str
) -> Iterator[AirflowStack]:
    with ExitStack() as running:
        home = tmp_path_factory.mktemp(f"airflow-{backend}")
        kind = "sqlite" if backend == "sqlite" else require_postgres()
        stack = running.enter_context(contextmanager(_stack)(home, kind))
        _RUNNING[backend] = running
        yield stack
        _RUNNING.pop(backend, None)


@pytest.fixture(scope="session")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    yield from _session_stack(tmp_path_factory, "sqlite")


@pytest.fixture(scope="session")
def pg_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    yield from _session_stack(tmp_path_factory, "pg")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    result = yield
    last = item.config.stash.get(LAST_USER, {})
    for backend, nodeid in last.items():
        if nodeid == item.nodeid and backend in _RUNNING:
            # A later test that asks for this stack again gets a stopped one and
            # fails loudly: tests/ordering.py then misses one of its fixtures.
            _RUNNING.pop(backend).close()
    return result


@pytest.fixture(scope="session")
def example_runs_sqlite(sqlite_stack: AirflowStack) -> ExampleRuns:
    return run_examples(sqlite_stack)


@pytest.fixture(scope="session")
def example_runs_pg(pg_stack: AirflowStack) -> ExampleRuns:
    return run_examples(pg_stack)


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.integration),
        pytest.param("pg", marks=[pytest.mark.integration, pytest.mark.postgres]),
    ]
)
def examples(request: pytest.FixtureRequest) -> tuple[AirflowStack, ExampleRuns]:
    """(stack, example runs) on each backend; PostgreSQL cases carry the ``postgres`` mark."""
    stack = request.getfixturevalue(f"{request.param}_stack")
    return stack, request.getfixturevalue(f"example_runs_{request.param}")


@pytest.fixture
def store(examples: tuple[AirflowStack, ExampleRuns]) -> Iterator[Store]:
    """The status store of the ``examples`` stack."""
    stack, _ = examples
    opened = Store(stack.store_url)
    yield opened
    opened.dispose()
