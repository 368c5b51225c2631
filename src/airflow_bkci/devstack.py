"""Launch a real local Airflow (scheduler, dag-processor, triggerer, api-server) for tests."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import requests
from sqlalchemy.engine import URL, make_url

from airflow_bkci.exceptions import BkciError

log = logging.getLogger(__name__)

__all__ = ["COMPONENTS", "FINAL_RUN_STATES", "AirflowStack", "StackError", "migrate_template"]

COMPONENTS: tuple[str, ...] = ("scheduler", "dag-processor", "triggerer", "api-server")
FINAL_RUN_STATES = frozenset({"success", "failed"})
# 64+ bytes: shorter HMAC keys make PyJWT warn on every token.
JWT_SECRET = "bkci-devstack-jwt-secret-not-for-production-" + "0123456789abcdef" * 2
# Fixed so every process of a stack (and a kept home reopened later) decrypts the same secrets.
FERNET_KEY = base64.urlsafe_b64encode(b"bkci-devstack-fernet-key-32bytes").decode()
TERM_TIMEOUT = 15.0
HTTP_TIMEOUT = 30.0
HTTP_ATTEMPTS = 3

Progress = Callable[[str], None]


class StackError(BkciError):
    """The local Airflow stack could not start, died, or did not answer in time."""

    def __init__(self, reason: str, log_tail: str = "") -> None:
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"{reason}\n{log_tail}" if log_tail else reason)


def airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow-core")


def airflow_bin() -> str:
    """The ``airflow`` script of this interpreter's environment, else the one on PATH."""
    local = Path(sys.executable).parent / "airflow"
    if local.exists():
        return str(local)
    found = shutil.which("airflow")
    if not found:
        raise StackError("No `airflow` executable next to this Python or on PATH; install Airflow.")
    return found


def cache_dir() -> Path:
    base = os.environ.get("BKCI_CACHE_DIR") or Path.home() / ".cache" / "airflow-bkci"
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(home: Path) -> dict[str, str]:
    """The parent environment without AIRFLOW__ settings that would leak into the stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__FERNET_KEY=FERNET_KEY,
        PYTHONUNBUFFERED="1",
    )
    return env


def _run_airflow(args: list[str], env: Mapping[str, str], log_path: Path) -> None:
    with log_path.open("ab") as out:
        proc = subprocess.run(
            [airflow_bin(), *args],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            cwd=env["AIRFLOW_HOME"],
        )
    if proc.returncode != 0:
        raise StackError(f"`airflow {' '.join(args)}` exited {proc.returncode}", tail(log_path))


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(f"  {path.name}| {line}" for line in text[-lines:])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- database templates -------------------------------------------------------------------


def is_postgres(backend: str) -> bool:
    return backend.startswith("postgres")


def pg_url(admin_url: str, database: str) -> URL:
    """``admin_url`` pointed at ``database``, with the psycopg 3 driver Airflow needs."""
    return make_url(admin_url).set(drivername="postgresql+psycopg", database=database)


def libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_admin(admin_url: str) -> Any:
    import psycopg

    return psycopg.connect(libpq(make_url(admin_url)), autocommit=True, connect_timeout=5)


def _pg_exists(conn: Any, name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
    )


def template_name() -> str:
    return "bkci_tpl_airflow_" + airflow_version().replace(".", "_").replace("-", "_")


def migrate_template(backend: str = "sqlite") -> str:
    """Migrate Airflow's schema once per Airflow version; return the template file or db name.

    Later stacks copy the template (a file copy on SQLite, ``CREATE DATABASE … TEMPLATE`` on
    PostgreSQL), which takes well under a second instead of a full ``airflow db migrate``.
    """
    return _pg_template(backend) if is_postgres(backend) else str(_sqlite_template())


def _sqlite_template() -> Path:
    target = cache_dir() / f"airflow-{airflow_version()}.db"
    with _file_lock(cache_dir() / ".sqlite-template.lock"):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(prefix="bkci-migrate-") as tmp:
            db = Path(tmp) / "airflow.db"
            env = base_env(Path(tmp)) | {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}"}
            _run_airflow(["db", "migrate"], env, Path(tmp) / "migrate.log")
            shutil.copyfile(db, target.with_suffix(".tmp"))
            target.with_suffix(".tmp").rename(target)
    return target


def _pg_template(admin_url: str) -> str:
    name = template_name()
    with _pg_admin(admin_url) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
        if not _pg_exists(conn, name):
            _pg_build_template(conn, admin_url, name)
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))
    return name


def _pg_build_template(conn: Any, admin_url: str, name: str) -> None:
    # Migrate under a scratch name and rename at the end: a half-migrated template never exists.
    scratch = f"{name}_tmp"
    conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    conn.execute(f'CREATE DATABASE "{scratch}"')
    with tempfile.TemporaryDirectory(prefix="bkci-migrate-") as tmp:
        url = pg_url(admin_url, scratch).render_as_string(hide_password=False)
        env = base_env(Path(tmp)) | {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": url,
        }
        _run_airflow(["db", "migrate"], env, Path(tmp) / "migrate.log")
    conn.execute(f'ALTER DATABASE "{scratch}" RENAME TO "{name}"')


# --- the stack ------------------------------------------------------------------------------


class AirflowStack:
    """A real Airflow 3 deployment in one home directory, started and stopped as a unit.

    ``backend`` is ``"sqlite"`` or an admin PostgreSQL URL (the stack creates and drops its own
    database there). ``config`` maps ``(section, option)`` to values; ``env`` adds variables.
    """

    def __init__(
        self,
        home: Path | None = None,
        dags_folder: Path | None = None,
        backend: str = "sqlite",
        *,
        config: Mapping[tuple[str, str], str] | None = None,
        env: Mapping[str, str] | None = None,
        keep: bool = False,
        progress: Progress | None = None,
    ) -> None:
        self._own_home = home is None
        self.home = Path(home or tempfile.mkdtemp(prefix="bkci-stack-")).resolve()
        self.dags_folder = Path(dags_folder or self.home / "dags").resolve()
        self.backend = backend
        self.keep = keep
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.log_ports = (free_port(), free_port())
        self.db_name = f"bkci_stack_{uuid.uuid4().hex[:12]}" if is_postgres(backend) else ""
        self._config = dict(config or {})
        self._extra_env = dict(env or {})
        self._progress = progress or (lambda msg: log.info("%s", msg))
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._http = requests.Session()
        self._token = ""

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> AirflowStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- configuration -----------------------------------------------------------------------

    @property
    def db_url(self) -> str:
        """SQLAlchemy URL of this stack's Airflow metadata database (for reading it in tests)."""
        if is_postgres(self.backend):
            return pg_url(self.backend, self.db_name).render_as_string(hide_password=False)
        return f"sqlite:///{self.home / 'airflow.db'}"

    def configure(self, section: str, option: str, value: str) -> None:
        """Set one Airflow option before :meth:`start` (after it, restart to apply)."""
        self._config[section, option] = value

    def set_env(self, name: str, value: str) -> None:
        """Set one environment variable of every component before :meth:`start`."""
        self._extra_env[name] = value

    @property
    def store_url(self) -> str:
        return self.env()["AIRFLOW__BKCI__STORE_URL"]

    def settings(self) -> dict[tuple[str, str], str]:
        """Airflow options of this stack; the caller's ``config`` wins."""
        exec_url = f"{self.api_url}/execution/"
        defaults = {
            ("core", "executor"): "LocalExecutor",
            ("core", "dags_folder"): str(self.dags_folder),
            ("core", "dags_are_paused_at_creation"): "False",
            ("core", "simple_auth_manager_all_admins"): "True",
            ("core", "execution_api_server_url"): exec_url,
            ("core", "parallelism"): "8",
            ("api", "host"): "127.0.0.1",
            ("api", "port"): str(self.port),
            ("api_auth", "jwt_secret"): JWT_SECRET,
            # Scheduler and triggerer serve logs on fixed ports (8793/8794) unless told otherwise.
            ("logging", "worker_log_server_port"): str(self.log_ports[0]),
            ("logging", "trigger_log_server_port"): str(self.log_ports[1]),
            ("database", "sql_alchemy_conn"): self.db_url,
            ("dag_processor", "refresh_interval"): "5",
            ("dag_processor", "min_file_process_interval"): "10",
            ("dag_processor", "print_stats_interval"): "300",
            ("scheduler", "scheduler_idle_sleep_time"): "0.5",
            # Two busy cores can stall the API server for seconds; the default 5 s
            # would fail tasks for reasons that have nothing to do with them.
            ("workers", "execution_api_timeout"): "30",
            ("bkci", "store_url"): f"sqlite:///{self.home / 'bkci' / 'status.db'}",
        }
        if is_postgres(self.backend):
            defaults["database", "sql_alchemy_conn_async"] = self.db_url
        return defaults | self._config

    def env(self) -> dict[str, str]:
        env = base_env(self.home)
        for (section, option), value in self.settings().items():
            env[f"AIRFLOW__{section.upper()}__{option.upper()}"] = value
        return env | self._extra_env

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, expect_dags: set[str] | None = None, timeout: float = 180.0) -> None:
        """Start every component and wait until the API answers and ``expect_dags`` are parsed.

        Without ``expect_dags`` it waits for the DAG ids found by file name in the dags folder
        (any DAG at all if none can be guessed). Everything started is stopped if this fails.
        """
        try:
            self._prepare()
            for name in COMPONENTS:
                self._progress(f"starting {name}…")
                self._spawn(name)
            self._progress("waiting for the API server…")
            self._wait_api(time.monotonic() + timeout)
            self._progress("waiting for DAGs to be parsed…")
            self.wait_dags(expect_dags, timeout)
        except BaseException:
            self.stop()
            raise

    def _prepare(self) -> None:
        for sub in ("logs", "bkci"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        self._progress("migrating database…")
        template = migrate_template(self.backend)
        if is_postgres(self.backend):
            with _pg_admin(self.backend) as conn:
                conn.execute(f'CREATE DATABASE "{self.db_name}" TEMPLATE "{template}"')
        elif not (self.home / "airflow.db").exists():
            shutil.copyfile(template, self.home / "airflow.db")

    def _spawn(self, name: str) -> None:
        args = [airflow_bin(), name]
        if name == "api-server":
            args += ["--port", str(self.port), "--host", "127.0.0.1"]
        out = (self.home / "logs" / f"{name}.log").open("ab")
        self._procs[name] = subprocess.Popen(
            args,
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.home,
            start_new_session=True,
        )
        out.close()

    def pids(self, component: str) -> set[int]:
        """The process ids of a running component and of every process it started."""
        proc = self._procs[component]
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        return {p.pid for p in family}

    def log_path(self, component: str) -> Path:
        return self.home / "logs" / f"{component}.log"

    def kill(self, component: str) -> None:
        """SIGKILL one component and its children, as a crash would (fault tests)."""
        proc = self._procs.pop(component)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def restart(self, component: str) -> None:
        """Start a component again after :meth:`kill`."""
        self._spawn(component)

    def check_alive(self) -> None:
        """Raise StackError with the log tail if a component has exited."""
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise StackError(
                    f"airflow {name} exited with {proc.returncode}; log: {self.log_path(name)}",
                    tail(self.log_path(name)),
                )

    def _wait_api(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(requests.RequestException):
                if self._http.get(f"{self.api_url}/api/v2/monitor/health", timeout=2).ok:
                    return
            time.sleep(0.5)
        raise StackError(
            f"API server did not answer on {self.api_url} in time",
            tail(self.log_path("api-server")),
        )

    def stop(self) -> None:
        """Stop every process this stack started (SIGTERM, then SIGKILL), and its database."""
        procs = self._procs
        self._procs = {}
        if procs:
            self._progress("stopping Airflow…")
            _terminate(list(procs.values()))
        self._http.close()
        if not self.keep:
            self._drop_storage()

    def _drop_storage(self) -> None:
        if is_postgres(self.backend) and self.db_name:
            with contextlib.suppress(Exception), _pg_admin(self.backend) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        if self._own_home:
            shutil.rmtree(self.home, ignore_errors=True)

    # -- REST --------------------------------------------------------------------------------

    def token(self) -> str:
        """A Bearer JWT for the REST API (an admin: the stack runs with all-admins)."""
        if not self._token:
            resp = self._http.post(
                f"{self.api_url}/auth/token",
                json={"username": "admin", "password": "admin"},
                timeout=HTTP_TIMEOUT,
            )
            resp.raise_for_status()
            self._token = str(resp.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``/api/v2{path}`` with a token; return the decoded JSON (None if empty).

        GETs are retried: on 2 busy cores the API server sometimes stalls for many seconds.
        """
        attempts = HTTP_ATTEMPTS if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                resp = self._http.request(
                    method,
                    f"{self.api_url}/api/v2{path}",
                    timeout=HTTP_TIMEOUT,
                    headers={"Authorization": f"Bearer {self.token()}"},
                    **kwargs,
                )
                break
            except (requests.ConnectionError, requests.Timeout):
                if attempt == attempts:
                    raise
                self.check_alive()
                log.warning("GET %s timed out (attempt %d of %d)", path, attempt, attempts)
        if not resp.ok:
            raise StackError(f"{method} /api/v2{path} answered {resp.status_code}: {resp.text}")
        return resp.json() if resp.content else None

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.api("GET", "/dags", params={"limit": 100})["dags"]}

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.api("GET", "/importErrors", params={"limit": 100})["import_errors"])

    def wait_dags(self, expect: set[str] | None = None, timeout: float = 120.0) -> set[str]:
        """Wait until the DAGs are parsed; an import error of a missing DAG fails at once."""
        expect = expect if expect is not None else guess_dag_ids(self.dags_folder)
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            found = self.dag_ids()
            if (expect and expect <= found) or (not expect and found):
                return found
            errors = self.import_errors()
            if errors:
                text = "\n".join(f"{e['filename']}: {e['stack_trace']}" for e in errors)
                raise StackError(f"DAG import errors in {self.dags_folder}", text)
            if time.monotonic() > deadline:
                missing = sorted((expect or {"<any DAG>"}) - found)
                raise StackError(
                    f"DAGs not parsed in {timeout:.0f} s: {missing}",
                    tail(self.log_path("dag-processor")),
                )
            time.sleep(1.0)

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Start a manual run now (no logical date); return its run id."""
        body = {"logical_date": None, "conf": dict(conf or {})}
        return str(self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 120.0) -> str:
        """Wait until the run is success or failed; return that state."""
        deadline = time.monotonic() + timeout
        while (state := self.run_state(dag_id, run_id)) not in FINAL_RUN_STATES:
            self.check_alive()
            if time.monotonic() > deadline:
                raise StackError(
                    f"{dag_id}/{run_id} still {state} after {timeout:.0f} s",
                    self._explain_or_tail(dag_id, run_id),
                )
            time.sleep(0.5)
        return state

    def clear_run(self, dag_id: str, run_id: str, only_failed: bool = False) -> None:
        """Clear every task of the run (or only the failed ones) so it runs again."""
        body = {"dry_run": False, "only_failed": only_failed}
        self.api("POST", f"/dags/{dag_id}/dagRuns/{run_id}/clear", json=body)

    def explain_run(self, dag_id: str, run_id: str, lines: int = 25) -> str:
        """Each task's state and, for one that did not succeed, the tail of its logs.

        What a failing test prints, so a run that ended wrong on a CI machine can be
        understood without the machine.
        """
        out = [f"{dag_id}/{run_id} is {self.run_state(dag_id, run_id)}:"]
        run_dir = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        for ti in self.task_instances(dag_id, run_id):
            out.append(
                f"- {ti['task_id']}[{ti['map_index']}] try {ti['try_number']}: {ti['state']}"
            )
            if ti["state"] in ("success", "skipped"):
                continue
            task_dir = run_dir / f"task_id={ti['task_id']}"
            if ti["map_index"] >= 0:
                task_dir /= f"map_index={ti['map_index']}"
            for log in sorted(task_dir.glob("attempt=*")):
                out.append(tail(log, lines))
        # The scheduler's own word on the run: executor events, state mismatches.
        said = [
            line
            for line in self.log_path("scheduler").read_text(errors="replace").splitlines()
            if run_id in line and ("executor" in line.lower() or "mismatch" in line)
        ]
        out += [f"  scheduler.log| {line}" for line in said[-lines:]]
        return "\n".join(out)

    def _explain_or_tail(self, dag_id: str, run_id: str) -> str:
        # Which tasks a stuck run waits on says more than the scheduler's last lines.
        try:
            return self.explain_run(dag_id, run_id)
        except Exception as exc:  # the API itself may be what hangs
            return f"(cannot explain the run: {exc})\n{tail(self.log_path('scheduler'))}"

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (mapped ones included), across pages."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.api(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(items)},
            )
            items += page["task_instances"]
            if len(items) >= page["total_entries"] or not page["task_instances"]:
                return items


def guess_dag_ids(folder: Path) -> set[str]:
    """DAG ids by the convention ``<dag_id>.py``; empty if the folder does not follow it."""
    return {p.stem for p in folder.glob("*.py") if not p.name.startswith("_")}


def _terminate(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, wait, then SIGKILL whatever is left (descendants included)."""
    family = _descendants(procs)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    psutil.wait_procs(family, timeout=TERM_TIMEOUT)
    family = [p for p in family if p.is_running()] + _descendants(procs)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    for leftover in family:
        with contextlib.suppress(psutil.Error):
            leftover.kill()
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _descendants(procs: list[subprocess.Popen[bytes]]) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(proc.pid)
            found += [root, *root.children(recursive=True)]
    return found
