"""``airflow-bkci demo``: run the example builds on a local Airflow and watch their status live."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from airflow_bkci.devstack import FINAL_RUN_STATES, AirflowStack, StackError
from airflow_bkci.example_dags import EXPECTED_STATES, FOLDER, SHOWCASE

__all__ = ["run_demo"]

UNGROUPED = "__ungrouped__"
COLORS = {
    "QUEUE": "grey50",
    "PREPARE_ENV": "cyan",
    "RUNNING": "bold blue",
    "REVIEWING": "magenta",
    "RETRY": "yellow",
    "SUCCEED": "green",
    "FAILED": "bold red",
    "CANCELED": "red",
    "SKIP": "grey62",
    "UNEXEC": "dark_orange",
}
RUN_TIMEOUT = 300.0


@dataclass
class Build:
    """What the demo shows of one run: the build document (store or REST) and Airflow's state."""

    dag_id: str
    run_id: str
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    airflow_state: str = "queued"
    doc: dict[str, Any] = field(default_factory=dict)
    source: str = "rest"

    @property
    def expected(self) -> str:
        return EXPECTED_STATES[self.dag_id]

    @property
    def done(self) -> bool:
        return self.airflow_state in FINAL_RUN_STATES

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started


def run_demo(home: Path | None, keep: bool = False, serve: bool = False) -> int:
    """Start Airflow with the example DAGs, run them, show progress; 0 if all ended as intended.

    With ``serve``, Airflow stays up after the summary (its UI and the BK-CI dashboard) until
    Ctrl-C.
    """
    console = Console()
    own_home = home is None
    home = home or Path(".demo") / datetime.now().strftime("%Y%m%d-%H%M%S")
    stack = AirflowStack(
        home=home,
        dags_folder=FOLDER,
        keep=keep,
        progress=lambda msg: console.print(f"[cyan]•[/] {msg}"),
    )
    ok = False
    try:
        builds = _run(stack, console)
        ok = _summary(builds, console)
        if serve:
            console.print(
                f"Airflow stays up: the dashboard is at {stack.api_url}/plugin/bkci "
                "(every user is an admin here); Ctrl-C stops it"
            )
            while True:
                stack.check_alive()
                time.sleep(1)
    except StackError as exc:
        console.print(f"[bold red]Airflow stack failed:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; Airflow stopped[/]")
        return 0 if serve and ok else 130
    finally:
        _cleanup(stack, home, own_home, keep, console)
    return 0 if ok else 1


def _summary(builds: list[Build], console: Console) -> bool:
    console.print(summary_table(builds))
    ok = all(b.airflow_state == b.expected for b in builds)
    console.print(
        "[green]every build ended as intended[/]"
        if ok
        else "[bold red]some builds did not end as intended[/]"
    )
    return ok


def _cleanup(stack: AirflowStack, home: Path, own_home: bool, keep: bool, console: Console) -> None:
    stack.stop()
    if keep:
        console.print(f"kept AIRFLOW_HOME {home.resolve()} (logs in {home.resolve() / 'logs'})")
    elif own_home:
        shutil.rmtree(home, ignore_errors=True)


def _run(stack: AirflowStack, console: Console) -> list[Build]:
    t0 = time.monotonic()
    stack.start(expect_dags=set(SHOWCASE))
    console.print(
        f"[cyan]•[/] Airflow ready in {time.monotonic() - t0:.1f} s at {stack.api_url}"
        f" (AIRFLOW_HOME {stack.home}); watch the builds in Airflow's UI too: "
        f"{stack.api_url}/plugin/bkci"
    )
    builds = [Build(dag_id, stack.trigger(dag_id)) for dag_id in SHOWCASE]
    watcher = Watcher(stack)
    with Live(watcher.render(builds), console=console, refresh_per_second=2) as live:
        while not all(b.done for b in builds):
            watcher.refresh(builds)
            live.update(watcher.render(builds))
            if max(b.elapsed for b in builds) > RUN_TIMEOUT:
                raise StackError(f"builds still running after {RUN_TIMEOUT:.0f} s")
            time.sleep(0.5)
        watcher.refresh(builds)
        live.update(watcher.render(builds))
    watcher.close()
    return builds


class Watcher:
    """Reads build documents from the status store, falling back to Airflow's REST API."""

    def __init__(self, stack: AirflowStack) -> None:
        self.stack = stack
        self.store: Any = None
        with contextlib.suppress(Exception):
            from airflow_bkci.store import Store

            self.store = Store(stack.store_url)

    def close(self) -> None:
        if self.store is not None:
            self.store.dispose()

    def refresh(self, builds: list[Build]) -> None:
        self.stack.check_alive()
        runs = {
            r["dag_run_id"]: r
            for r in self.stack.api(
                "GET", "/dags/~/dagRuns", params={"limit": 100, "order_by": "-run_after"}
            )["dag_runs"]
        }
        tis = self.stack.task_instances("~", "~")
        for build in builds:
            self._update(build, runs.get(build.run_id), tis)

    def _update(self, build: Build, run: dict[str, Any] | None, tis: list[dict[str, Any]]) -> None:
        if run is not None:
            build.airflow_state = run["state"]
        if build.done and build.ended is None:
            build.ended = time.monotonic()
        doc = self._from_store(build)
        if doc is not None:
            build.doc, build.source = doc, "store"
            return
        mine = [t for t in tis if t["dag_id"] == build.dag_id and t["dag_run_id"] == build.run_id]
        build.doc, build.source = rest_document(build, mine), "rest"

    def _from_store(self, build: Build) -> dict[str, Any] | None:
        if self.store is None:
            return None
        try:
            doc = self.store.find_build(build.dag_id, build.run_id)
        except Exception:  # the plugin may not have created its tables yet
            return None
        return dict(doc) if doc and doc.get("stages") else None

    def render(self, builds: list[Build]) -> Table:
        sources = {b.source for b in builds}
        note = (
            "status store"
            if sources == {"store"}
            else "Airflow REST (status store not filled yet)"
            if sources == {"rest"}
            else "status store, Airflow REST where it has no build yet"
        )
        table = progress_table(builds)
        table.caption = f"source: {note}"
        return table


def rest_document(build: Build, tis: list[dict[str, Any]]) -> dict[str, Any]:
    """A build document in the store's shape, made from Airflow's task instances."""
    from airflow_bkci.model.mapping import map_run_state, map_task_state
    from airflow_bkci.model.status import BuildStatus
    from airflow_bkci.model.tree import stage_status

    stages: dict[str, dict[str, Any]] = {}
    for ti in tis:
        stage_id = ti["task_id"].split(".", 1)[0] if "." in ti["task_id"] else UNGROUPED
        node_id = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
        status = map_task_state(ti["state"]).status or BuildStatus.SKIP
        stage = stages.setdefault(stage_id, {"id": stage_id, "tasks": {}, "first": "~"})
        # REST lists tasks by id; the earliest start puts stages in the order they ran.
        stage["first"] = min(stage["first"], ti.get("start_date") or "~")
        stage["tasks"][node_id] = {
            "status": status.value,
            "try_number": ti["try_number"],
            "duration_ms": int((ti.get("duration") or 0) * 1000) or None,
        }
    for order, stage in enumerate(sorted(stages.values(), key=lambda s: (s["first"], s["id"]))):
        stage["order"] = order
        stage["status"] = stage_status(
            BuildStatus(t["status"]) for t in stage["tasks"].values()
        ).value
    run_status = map_run_state(build.airflow_state).status
    return {"status": run_status.value if run_status else "QUEUE", "stages": stages}


def task_counts(doc: dict[str, Any]) -> dict[str, int]:
    statuses = [t["status"] for s in doc.get("stages", {}).values() for t in s["tasks"].values()]
    return {
        "total": len(statuses),
        "ok": statuses.count("SUCCEED"),
        "failed": statuses.count("FAILED") + statuses.count("UNEXEC"),
        "skipped": statuses.count("SKIP"),
        "retried": sum(
            1
            for s in doc.get("stages", {}).values()
            for t in s["tasks"].values()
            if (t.get("try_number") or 0) > 1
        ),
    }


def styled(status: str) -> Text:
    return Text(status, style=COLORS.get(status, ""))


def stage_strip(doc: dict[str, Any]) -> Text:
    """One line per build: each stage's name in its status colour, with done/total tasks."""
    line = Text()
    ordered = sorted(doc.get("stages", {}).items(), key=lambda kv: (kv[1].get("order", 99), kv[0]))
    for stage_id, stage in ordered:
        tasks = stage["tasks"].values()
        done = sum(
            1
            for t in tasks
            if t["status"] not in ("QUEUE", "PREPARE_ENV", "RUNNING", "RETRY", "REVIEWING")
        )
        name = "·" if stage_id == UNGROUPED else stage_id
        line.append(f"{name} {done}/{len(tasks)}", style=COLORS.get(stage["status"], ""))
        line.append("  ")
    return line


def progress_table(builds: list[Build]) -> Table:
    table = Table(title="BK-CI builds (live)", box=box.SIMPLE_HEAD)
    table.add_column("build", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("stages")
    table.add_column("ok/fail/skip", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for b in builds:
        counts = task_counts(b.doc)
        table.add_row(
            b.dag_id,
            styled(b.doc.get("status", "QUEUE")),
            stage_strip(b.doc),
            f"{counts['ok']}/{counts['failed']}/{counts['skipped']} of {counts['total']}",
            f"{b.elapsed:5.1f} s",
        )
    return table


def summary_table(builds: list[Build]) -> Table:
    table = Table(title="Summary", box=box.SIMPLE_HEAD)
    table.add_column("build", no_wrap=True)
    for column in ("status", "airflow", "duration", "ok", "failed", "skipped", "retried"):
        table.add_column(column, justify="right" if column not in ("status", "airflow") else "left")
    for b in builds:
        counts = task_counts(b.doc)
        mark = "" if b.airflow_state == b.expected else f" (expected {b.expected})"
        table.add_row(
            b.dag_id,
            styled(b.doc.get("status", "?")),
            Text(b.airflow_state + mark, style="green" if not mark else "bold red"),
            f"{b.elapsed:.1f} s",
            str(counts["ok"]),
            str(counts["failed"]),
            str(counts["skipped"]),
            str(counts["retried"]),
        )
    return table
