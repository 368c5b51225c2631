"""Fakes and builders for the dashboard tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from jwt import ExpiredSignatureError, InvalidTokenError

from airflow_bkci.dashboard.catalog import DagFacts
from airflow_bkci.model import BuildStatus, StatusEvent
from airflow_bkci.model.event import utcnow
from tests.unit.api.users import User
from tests.unit.store.builders import build_event, event

S = BuildStatus
ALICE = {"Authorization": "Bearer alice-token"}  # may not read "secret", may not edit "deploy"
BOB = {"Authorization": "Bearer bob-token"}  # may do everything


class FakeAuthManager:
    """Tokens name users; ``no_read``/``no_edit`` hold the DAGs a user is denied."""

    def __init__(self) -> None:
        self.users = {"alice-token": User("alice"), "bob-token": User("bob")}
        self.no_read: dict[str, set[str]] = {"alice": {"secret"}}
        self.no_edit: dict[str, set[str]] = {"alice": {"deploy", "secret"}}
        self.login_url: str | None = "/auth/login"
        self.methods: list[str] = []

    async def get_user_from_token(self, token: str) -> BaseUser:
        if token == "expired":
            raise ExpiredSignatureError("Signature has expired")
        if token not in self.users:
            raise InvalidTokenError("Signature verification failed")
        return self.users[token]

    def filter_authorized_dag_ids(
        self, *, dag_ids: set[str], user: User, method: str, team_name: str | None = None
    ) -> set[str]:
        self.methods.append(method)
        denied = (self.no_edit if method == "PUT" else self.no_read).get(user.name, set())
        return dag_ids - denied

    def get_url_login(self, **kwargs: Any) -> str:
        if self.login_url is None:
            raise NotImplementedError("this auth manager has no login page")
        return self.login_url


class FakeCatalog:
    """Airflow's DAGs as plain data; counts the calls (the wall must batch them)."""

    def __init__(self) -> None:
        self.dags: dict[str, DagFacts] = {}
        self.stale: set[str] = set()
        self.describe_calls: list[tuple[list[str], list[str]]] = []

    def add(
        self,
        dag_id: str,
        owners: Sequence[str] = ("airflow",),
        tags: Sequence[str] = (),
        task_owners: dict[str, str] | None = None,
    ) -> None:
        self.dags[dag_id] = DagFacts(dag_id, tuple(owners), tuple(tags), task_owners or {})

    def describe(
        self, dag_ids: Sequence[str], with_tasks: Sequence[str] = ()
    ) -> dict[str, DagFacts]:
        self.describe_calls.append((list(dag_ids), list(with_tasks)))
        found = {}
        for dag_id in dag_ids:
            facts = self.dags.get(dag_id)
            if facts is not None:
                tasks = facts.task_owners if dag_id in with_tasks else {}
                found[dag_id] = DagFacts(dag_id, facts.owners, facts.tags, tasks)
        return found

    def tagged(self, tag: str) -> list[str]:
        return sorted(d for d, f in self.dags.items() if tag in f.tags and d not in self.stale)


def ago(hours: float, now: datetime | None = None) -> str:
    return ((now or utcnow()) - timedelta(hours=hours)).isoformat()


def finished(
    dag: str,
    run: str,
    status: BuildStatus,
    *,
    due_hours_ago: float,
    seconds: float,
    now: datetime | None = None,
    user: str | None = None,
) -> StatusEvent:
    """A build due ``due_hours_ago`` that ran ``seconds`` (starting 1 s after it was due)."""
    now = now or utcnow()
    due = now - timedelta(hours=due_hours_ago)
    return build_event(
        status,
        run=run,
        dag=dag,
        run_after=due.isoformat(),
        started_at=(due + timedelta(seconds=1)).isoformat(),
        ended_at=(due + timedelta(seconds=1 + seconds)).isoformat(),
        triggering_user=user,
    )


def running(
    dag: str, run: str, *, due_hours_ago: float, now: datetime | None = None
) -> StatusEvent:
    now = now or utcnow()
    due = now - timedelta(hours=due_hours_ago)
    return build_event(
        S.RUNNING,
        run=run,
        dag=dag,
        run_after=due.isoformat(),
        started_at=(due + timedelta(seconds=1)).isoformat(),
    )


def task(
    dag: str, run: str, task_id: str, status: BuildStatus, ended_hours_ago: float = 0, **kw: Any
) -> StatusEvent:
    fields = {"ended_at": ago(ended_hours_ago)} if status.is_finished else {}
    return event(status, task_id, run=run, dag=dag, **fields, **kw)
