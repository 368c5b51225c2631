"""``BatchCancelOperator``: cancel builds from a DAG, through the API server's cancel route.

The cancel runs where the database is (the API server), as the connection's
user and with that user's DAG permissions; a task runner has no database.

    # "a newer run supersedes this DAG's earlier ones", in one line:
    BatchCancelOperator(task_id="cancel_earlier", cancel_earlier_runs=True, reason="superseded")

    # the builds another task found (XCom), or a filter:
    BatchCancelOperator(task_id="cancel", builds=find_stale.output, reason="stale")
    BatchCancelOperator(task_id="cancel", dag_ids=["etl"], older_than=timedelta(hours=6),
                        reason="stuck for 6 h")

It returns the cancel's result (per build: outcome, tasks failed and skipped)
as its XCom. A refusal (no permission, unknown builds, bad input) fails the
task without retries; a server or network fault is retried as usual.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_bkci.hooks.api import BkciApiClient, BkciApiError

__all__ = ["BatchCancelOperator"]

DEFAULT_CONN_ID = "bkci_api"


def as_build_refs(items: Iterable[Any]) -> list[dict[str, str]]:
    """Builds as ``{"dag_id", "run_id"}``, from dicts, pairs or ``"dag_id/run_id"`` strings."""
    refs = []
    for item in items:
        if isinstance(item, dict) and {"dag_id", "run_id"} <= set(item):
            refs.append({"dag_id": str(item["dag_id"]), "run_id": str(item["run_id"])})
        elif isinstance(item, list | tuple) and len(item) == 2:
            refs.append({"dag_id": str(item[0]), "run_id": str(item[1])})
        elif isinstance(item, str) and "/" in item:
            dag_id, _, run_id = item.partition("/")
            refs.append({"dag_id": dag_id, "run_id": run_id})
        else:
            raise ValueError(
                f"{item!r} is not a build: use {{'dag_id', 'run_id'}}, a pair, or 'dag_id/run_id'"
            )
    return refs


class BatchCancelOperator(BaseOperator):
    """Cancel builds, all or nothing: named, by build id, by filter, or this DAG's earlier runs."""

    template_fields: Sequence[str] = ("builds", "build_ids", "dag_ids", "reason", "conf_match")
    ui_color = "#f4a6a6"

    def __init__(
        self,
        *,
        reason: str,
        builds: Any = None,
        build_ids: Any = None,
        dag_ids: Sequence[str] | None = None,
        states: Sequence[str] = ("queued", "running"),
        older_than: timedelta | float | None = None,
        conf_match: dict[str, Any] | None = None,
        cancel_earlier_runs: bool = False,
        dry_run: bool = False,
        chunked: bool = False,
        http_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        chosen = [builds is not None, build_ids is not None, bool(dag_ids or cancel_earlier_runs)]
        if sum(chosen) != 1:
            raise ValueError(
                "give exactly one of builds, build_ids, dag_ids (a filter) or cancel_earlier_runs"
            )
        self.reason = reason
        self.builds = builds
        self.build_ids = build_ids
        self.dag_ids = list(dag_ids or [])
        self.states = list(states)
        self.older_than = older_than
        self.conf_match = conf_match
        self.cancel_earlier_runs = cancel_earlier_runs
        self.cancel_dry_run = dry_run  # BaseOperator.dry_run is a method
        self.chunked = chunked
        self.http_conn_id = http_conn_id

    def request_body(self, context: Any) -> dict[str, Any] | None:
        """The body for the cancel route; None when there is nothing to cancel."""
        body: dict[str, Any] = {
            "reason": self.reason,
            "dry_run": self.cancel_dry_run,
            "chunked": self.chunked,
        }
        if self.builds is not None:
            refs = as_build_refs(self.builds or [])
            if not refs:
                return None
            body["builds"] = refs
            return body
        if self.build_ids is not None:
            ids = [str(b) for b in self.build_ids or []]
            if not ids:
                return None
            body["build_ids"] = ids
            return body
        flt: dict[str, Any] = {"states": self.states}
        if self.cancel_earlier_runs:
            run = context["dag_run"]
            flt["dag_ids"] = [run.dag_id]
            flt["due_before"] = run.run_after.isoformat()
            flt["exclude"] = [{"dag_id": run.dag_id, "run_id": run.run_id}]
        else:
            flt["dag_ids"] = self.dag_ids
        if self.older_than is not None:
            age = self.older_than
            flt["older_than_seconds"] = age.total_seconds() if isinstance(age, timedelta) else age
        if self.conf_match:
            flt["conf"] = self.conf_match
        body["filter"] = flt
        return body

    def execute(self, context: Any) -> dict[str, Any]:
        body = self.request_body(context)
        if body is None:
            self.log.info("Nothing to cancel: the list of builds is empty")
            return {"builds": [], "summary": {}, "dry_run": self.cancel_dry_run}
        client = BkciApiClient.from_connection(self.http_conn_id)
        try:
            result = client.cancel(body)
        except BkciApiError as exc:
            if exc.is_refusal:  # the same request would be refused again: no retry
                raise AirflowFailException(f"cancel refused: {exc}") from None
            raise
        summary = ", ".join(f"{n} {o}" for o, n in result.get("summary", {}).items() if n)
        self.log.info(
            "%s %d builds: %s (cancel %s)",
            "Dry run over" if self.cancel_dry_run else "Canceled",
            len(result.get("builds", [])),
            summary or "nothing matched",
            result.get("cancel_id"),
        )
        for build in result.get("builds", []):
            self.log.info("  %s/%s: %s", build["dag_id"], build["run_id"], build["outcome"])
        return result
