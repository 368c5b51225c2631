"""The live hub and its clients on a real SQLite store: order, resync, slow readers, late rows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_bkci.channels.consumer import BuildMirror
from airflow_bkci.channels.envelope import EVENT_CHANGED, EVENT_SNAPSHOT
from airflow_bkci.channels.live import ClientGone, Head, LiveClient, LiveHub, StoreTail
from airflow_bkci.model import BuildStatus
from airflow_bkci.model.event import build_id_for, utcnow
from airflow_bkci.store import Store
from airflow_bkci.store.apply import apply_events
from tests.unit.store.builders import DAG, build_event, event

pytestmark = pytest.mark.timeout(60)

S = BuildStatus


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'status.db'}")
    store.migrate()
    return store


class Receiver:
    """A client's socket: keeps the frames, can be made to stop reading."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.stuck = asyncio.Event()
        self.stuck.set()

    async def send(self, text: str) -> None:
        await self.stuck.wait()
        body = json.loads(text)
        self.frames.extend(body if isinstance(body, list) else [body])

    @property
    def events(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if "specversion" in f]

    def mirror(self) -> BuildMirror:
        mirror = BuildMirror()
        mirror.receive_all(self.events)
        return mirror


def steps(run: str, count: int) -> list[list[Any]]:
    """``count`` batches that each change the build's document."""
    batches = [[build_event(S.QUEUE, run=run, at=0)], [build_event(S.RUNNING, run=run, at=1)]]
    for i in range(count - 2):
        batches.append([event(S.QUEUE, f"t{i}", run=run, at=2 + i)])
    return batches[:count]


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def make(store: Store, **kw: Any) -> LiveHub:
    return LiveHub(StoreTail(store), source="/test", poll_interval=0.01, **kw)


def follow(
    hub: LiveHub, *, pipelines: tuple[str, ...] = (DAG,), builds: tuple[str, ...] = (), **kw: Any
) -> tuple[LiveClient, Receiver, asyncio.Task[None]]:
    """A client of ``hub`` that follows these pipelines and builds, its sender running."""
    receiver = Receiver()
    kw.setdefault("heartbeat", 0)
    client = LiveClient(receiver.send, name=kw.pop("name", "a"), **kw)
    client.pipelines.update(pipelines)
    client.builds.update(builds)
    hub.add(client)
    return client, receiver, client.start(hub)


def test_pipeline_follower_gets_every_change_set_in_order(store: Store) -> None:
    async def main() -> None:
        hub = make(store)
        client, receiver, task = follow(hub)
        await until(lambda: hub.polls >= 1, "the first poll")
        build_id = build_id_for(DAG, "run-1")
        for i, batch in enumerate(steps("run-1", 6), start=1):
            await asyncio.to_thread(store.apply, batch)
            await until(lambda i=i: client.have.get(build_id) == i, f"change set {i}")
        sequences = [int(e["sequence"]) for e in receiver.events]
        assert sequences == [1, 2, 3, 4, 5, 6]
        assert {e["type"] for e in receiver.events} == {EVENT_CHANGED}
        assert receiver.mirror().document(build_id) == store.build_tree(build_id)
        task.cancel()
        await hub.stop()

    asyncio.run(main())


def test_a_client_with_nothing_of_a_build_under_way_gets_a_snapshot(store: Store) -> None:
    for batch in steps("run-1", 4):
        store.apply(batch)
    build_id = build_id_for(DAG, "run-1")

    async def main() -> None:
        hub = make(store)
        client, receiver, task = follow(hub)
        client.need(Head(build_id, DAG, 4))
        await until(lambda: client.have.get(build_id) == 4, "the snapshot")
        await asyncio.to_thread(store.apply, steps("run-1", 5)[4])
        await until(lambda: client.have.get(build_id) == 5, "the next change set")
        kinds = [(e["type"], int(e["sequence"])) for e in receiver.events]
        assert kinds == [(EVENT_SNAPSHOT, 4), (EVENT_CHANGED, 5)]
        assert receiver.mirror().document(build_id) == store.build_tree(build_id)
        task.cancel()
        await hub.stop()

    asyncio.run(main())


def test_resume_sends_only_what_the_client_lacks(store: Store) -> None:
    for batch in steps("run-1", 5):
        store.apply(batch)
    build_id = build_id_for(DAG, "run-1")

    async def main() -> None:
        hub = make(store)
        client, receiver, task = follow(hub, pipelines=(), builds=(build_id,))
        client.need(Head(build_id, DAG, 5), have=2)
        await until(lambda: client.have.get(build_id) == 5, "the missing change sets")
        assert [int(e["sequence"]) for e in receiver.events] == [3, 4, 5]
        task.cancel()
        await hub.stop()

    asyncio.run(main())


def test_a_client_that_does_not_read_is_told_to_resync_and_holds_up_no_one(store: Store) -> None:
    async def main() -> None:
        hub = make(store)
        slow, fast = Receiver(), Receiver()
        slow.stuck.clear()  # its socket takes nothing
        slow_client = LiveClient(slow.send, name="slow", heartbeat=0, buffer=5)
        fast_client = LiveClient(fast.send, name="fast", heartbeat=0, buffer=5)
        for client in (slow_client, fast_client):
            client.pipelines.add(DAG)
            hub.add(client)
        slow_task, fast_task = slow_client.start(hub), fast_client.start(hub)
        await until(lambda: hub.polls >= 1, "the first poll")
        build_id = build_id_for(DAG, "run-1")
        for batch in steps("run-1", 12):
            await asyncio.to_thread(store.apply, batch)
            await until(lambda: fast_client.have.get(build_id, 0) >= 1, "the fast client")
        await until(lambda: fast_client.have.get(build_id) == 12, "all twelve, fast client")
        await until(lambda: slow_client.gone is not None, "the slow client cut loose")
        gone = slow_client.gone
        assert isinstance(gone, ClientGone) and gone.code == 4409
        assert gone.frame is not None and json.loads(gone.frame)["op"] == "resync"
        assert slow.events == []
        assert fast.mirror().document(build_id) == store.build_tree(build_id)
        await asyncio.gather(slow_task, return_exceptions=True)
        fast_task.cancel()
        await hub.stop()

    asyncio.run(main())


def test_a_change_committed_late_with_an_older_timestamp_is_still_delivered(store: Store) -> None:
    """The case a tailer by global id or by timestamp watermark loses."""

    async def main() -> None:
        hub = make(store)
        client, receiver, task = follow(hub)
        await until(lambda: hub.polls >= 1, "the first poll")
        await asyncio.to_thread(store.apply, steps("run-2", 1)[0])
        polls = hub.polls
        await until(lambda: hub.polls > polls + 1, "two more polls")
        # A transaction that began 5 s ago (and took its time then) commits now.
        late = utcnow() - timedelta(seconds=5)
        with store._write() as conn:
            apply_events(conn, steps("run-1", 1)[0], late)
        build_id = build_id_for(DAG, "run-1")
        await until(lambda: client.have.get(build_id) == 1, "the late change set")
        assert receiver.mirror().document(build_id) == store.build_tree(build_id)
        task.cancel()
        await hub.stop()

    asyncio.run(main())


def test_two_workers_each_tailing_the_store_both_see_every_change(store: Store) -> None:
    async def main() -> None:
        hubs = [make(store), make(store)]
        receivers = [Receiver(), Receiver()]
        clients = [LiveClient(r.send, name=f"w{i}", heartbeat=0) for i, r in enumerate(receivers)]
        tasks = []
        for hub, client in zip(hubs, clients, strict=True):
            client.pipelines.add(DAG)
            hub.add(client)
            tasks.append(client.start(hub))
        await until(lambda: all(h.polls >= 1 for h in hubs), "first polls")
        for run in ("run-1", "run-2"):
            for batch in steps(run, 4):
                await asyncio.to_thread(store.apply, batch)
        for client in clients:
            for run in ("run-1", "run-2"):
                build_id = build_id_for(DAG, run)
                await until(
                    lambda c=client, b=build_id: c.have.get(b) == 4, f"{run} on {client.name}"
                )
        for receiver in receivers:
            mirror = receiver.mirror()
            for run in ("run-1", "run-2"):
                build_id = build_id_for(DAG, run)
                assert mirror.document(build_id) == store.build_tree(build_id)
        for task in tasks:
            task.cancel()
        for hub in hubs:
            await hub.stop()

    asyncio.run(main())


def test_heartbeats_on_an_idle_connection(store: Store) -> None:
    async def main() -> None:
        hub = make(store)
        _, receiver, task = follow(hub, pipelines=(), heartbeat=0.05)
        await until(lambda: len(receiver.frames) >= 2, "two heartbeats")
        assert {f["op"] for f in receiver.frames} == {"heartbeat"}
        task.cancel()
        await hub.stop()

    asyncio.run(main())


def test_an_expired_token_ends_the_client(store: Store) -> None:
    async def main() -> None:
        hub = make(store)
        receiver = Receiver()
        loop = asyncio.get_running_loop()
        client = LiveClient(receiver.send, name="a", heartbeat=0, expires_at=loop.time() + 0.05)
        client._clock = loop.time
        hub.add(client)
        await client.start(hub)
        assert client.gone is not None and client.gone.code == 4401
        await hub.stop()

    asyncio.run(main())


def test_a_change_between_a_subscribe_and_the_first_poll_is_not_lost(store: Store) -> None:
    for batch in steps("run-1", 2):
        store.apply(batch)
    build_id = build_id_for(DAG, "run-1")

    async def main() -> None:
        hub = make(store)
        receiver = Receiver()
        client = LiveClient(receiver.send, name="a", heartbeat=0)
        client.builds.add(build_id)
        hub.clients.add(client)  # registered, but the tailer has not looked yet
        task = client.start(hub)
        client.need(Head(build_id, DAG, 2), have=2)
        await asyncio.to_thread(store.apply, steps("run-1", 3)[2])
        await hub.poll_once()  # the first look only learns where builds are...
        await until(lambda: client.have.get(build_id) == 3, "change set 3")  # ...and says so
        assert [int(e["sequence"]) for e in receiver.events] == [3]
        task.cancel()

    asyncio.run(main())
