"""Benchmark the plugin's cost in a real local Airflow: hook time and DAG wall time.

    /work/venv/bin/python benchmarks/run.py [--quick] [--reps N] [--keep]

Part 1 (hook cost) starts one stack with a measuring plugin in its plugins folder
(benchmarks/plugins/bkci_measure.py) that times every call of our listeners and of a no-op
listener, runs every example DAG once, and prints per (process role, hook) percentiles.
Part 2 (DAG wall time) starts a stack with the plugin and one without it (shadowed, see
benchmarks/plugins/bkci_shadow.py), runs bkci_chains on them alternately and prints the
medians and the ratio. Everything the plugin talks to is unreachable in both parts.
Figures are ratios and differences against a baseline of the same run: the machine is shared.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil

from airflow_bkci.devstack import AirflowStack, StackError
from airflow_bkci.example_dags import EXPECTED_STATES, FOLDER

HERE = Path(__file__).resolve().parent
MEASURE_PLUGIN = HERE / "plugins" / "bkci_measure.py"
SHADOW_PLUGIN = HERE / "plugins" / "bkci_shadow.py"
CHAINS = "bkci_chains"
RUN_TIMEOUT = 300.0  # a 60-task run takes 30-60 s here; longer means a stuck task
SETTLE = 5.0
OURS = ("ServerListener", "WorkerListener")
NOOP = "NoopListener"
CPU_P99_TARGET_MS = 1.0
WALL_P99_MARGIN_MS = 0.5
DAG_RATIO_TARGET = 1.05
# Rows per (role, hook): our two listeners together, each alone, the no-op.
WHO = {"bkci": "bkci", "ServerListener": " srv", "WorkerListener": " wrk", "noop": "noop"}


# --- stacks ----------------------------------------------------------------------------------


def closed_port() -> int:
    """A local port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unreachable_env() -> dict[str, str]:
    return {
        "AIRFLOW__BKCI__INGEST_URL": f"http://127.0.0.1:{closed_port()}/bkci/ingest",
        "AIRFLOW__BKCI__STORE_URL": f"postgresql://postgres@127.0.0.1:{closed_port()}/none",
    }


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@contextlib.contextmanager
def stack(
    label: str, plugin_files: Sequence[Path], keep: bool, extra_env: dict[str, str] | None = None
) -> Iterator[AirflowStack]:
    """A started stack on the example DAGs, with ``plugin_files`` in its plugins folder."""
    home = Path(tempfile.mkdtemp(prefix=f"bkci-bench-{label}-"))
    plugins = home / "plugins"
    plugins.mkdir()
    for path in plugin_files:
        shutil.copy(path, plugins / path.name)
    env = unreachable_env() | {"BKCI_BENCH_SAMPLES": str(home / "samples")} | (extra_env or {})
    st = AirflowStack(
        home=home,
        dags_folder=FOLDER,
        config={("core", "plugins_folder"): str(plugins)},
        env=env,
        keep=keep,
        progress=lambda msg: say(f"{label}: {msg}"),
    )
    try:
        st.start(expect_dags=set(EXPECTED_STATES), timeout=300.0)
        yield st
    finally:
        st.stop()
        if keep:
            say(f"{label}: kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def start_all(
    stacks: Mapping[str, contextlib.AbstractContextManager[AirflowStack]],
) -> tuple[contextlib.ExitStack, dict[str, AirflowStack]]:
    """Enter every stack's context at once (starting takes a minute each on 2 busy cores)."""
    exits = contextlib.ExitStack()
    started: dict[str, AirflowStack] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def enter(label: str, cm: contextlib.AbstractContextManager[AirflowStack]) -> None:
        try:
            st = cm.__enter__()
        except BaseException as exc:  # re-raised below, after the others are stopped
            errors.append(exc)
            return
        with lock:
            started[label] = st
            exits.push(cm.__exit__)

    threads = [threading.Thread(target=enter, args=item) for item in stacks.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        exits.close()
        raise errors[0]
    return exits, started


# --- part 1: hook cost -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    role: str
    owner: str
    hook: str
    wall_ns: int
    cpu_ns: int


def read_samples(folder: Path) -> list[Sample]:
    """Samples of every process; our two listeners' calls of one invocation added up."""
    samples: list[Sample] = []
    for path in sorted(folder.glob("samples-*.csv")):
        samples += _merge_ours(path.read_text().splitlines())
    return samples


def _merge_ours(lines: Iterable[str]) -> list[Sample]:
    # Within a process, one invocation calls our listeners one after the other with the same
    # argument objects: consecutive rows with the same hook and key belong together.
    out: list[Sample] = []
    pending: tuple[str, str, str, int, int] | None = None  # role, hook, key, wall, cpu
    for line in lines:
        parts = line.split(",")
        if len(parts) != 6:
            continue
        role, owner, hook, key, wall, cpu = parts
        if owner in OURS:
            out.append(Sample(role, owner, hook, int(wall), int(cpu)))
            if pending and pending[1:3] == (hook, key):
                pending = (role, hook, key, pending[3] + int(wall), pending[4] + int(cpu))
                continue
            if pending:
                out.append(Sample(pending[0], "bkci", pending[1], pending[3], pending[4]))
            pending = (role, hook, key, int(wall), int(cpu))
            continue
        if pending:
            out.append(Sample(pending[0], "bkci", pending[1], pending[3], pending[4]))
            pending = None
        out.append(Sample(role, "noop" if owner == NOOP else owner, hook, int(wall), int(cpu)))
    if pending:
        out.append(Sample(pending[0], "bkci", pending[1], pending[3], pending[4]))
    return out


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); exact for the small counts here."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def ms(ns: float) -> str:
    return f"{ns / 1e6:8.3f}"


def report_hooks(samples: list[Sample]) -> None:
    groups: dict[tuple[str, str, str], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.role, s.hook, s.owner].append(s)
    keys = sorted({(role, hook) for role, hook, _ in groups})
    print()
    print("HOOK COST per call, ms. bkci = both our listeners for one invocation (srv, wrk: each")
    print("alone); noop = a no-op listener in the same processes; p50/p99 nearest rank")
    head = (
        f"{'role':<13} {'hook':<26} {'who':<5} {'n':>4} {'wall p50':>8} {'wall p99':>8} "
        f"{'wall max':>8} {'cpu p50':>8} {'cpu p99':>8} {'cpu max':>8}"
    )
    print(head)
    print("-" * len(head))
    verdicts: list[str] = []
    for role, hook in keys:
        rows = {who: groups.get((role, hook, who), []) for who in WHO}
        for who, rs in rows.items():
            if not rs:
                continue
            wall = [s.wall_ns for s in rs]
            cpu = [s.cpu_ns for s in rs]
            print(
                f"{role:<13} {hook:<26} {WHO[who]:<5} {len(rs):>4} {ms(pct(wall, 50))} "
                f"{ms(pct(wall, 99))} {ms(max(wall))} {ms(pct(cpu, 50))} {ms(pct(cpu, 99))} "
                f"{ms(max(cpu))}"
            )
        ours, noop = rows["bkci"], rows["noop"]
        if ours:
            verdicts.append(_verdict(role, hook, ours, noop))
    extra = sorted({(s.role, s.owner, s.hook) for s in samples if s.owner not in WHO})
    for role, owner, hook in extra:
        rs = groups[role, hook, owner]
        wall, cpu = [s.wall_ns for s in rs], [s.cpu_ns for s in rs]
        print(
            f"{role:<13} {owner + '.' + hook:<32} {len(rs):>4} {ms(pct(wall, 50))} "
            f"{ms(pct(wall, 99))} {ms(max(wall))} {ms(pct(cpu, 50))} {ms(pct(cpu, 99))} "
            f"{ms(max(cpu))}   (outside the hooks)"
        )
    print()
    print(
        f"TARGETS: our cpu p99 <= {CPU_P99_TARGET_MS} ms; our wall p99 - noop wall p99 <= "
        f"{WALL_P99_MARGIN_MS} ms"
    )
    for line in verdicts:
        print(line)


def _verdict(role: str, hook: str, ours: list[Sample], noop: list[Sample]) -> str:
    cpu99 = pct([s.cpu_ns for s in ours], 99) / 1e6
    wall99 = pct([s.wall_ns for s in ours], 99) / 1e6
    cpu_ok = "PASS" if cpu99 <= CPU_P99_TARGET_MS else "FAIL"
    if noop:
        noop99 = pct([s.wall_ns for s in noop], 99) / 1e6
        diff = wall99 - noop99
        wall_txt = (
            f"wall p99 {wall99:.3f} - noop {noop99:.3f} = {diff:+.3f} ms "
            f"{'PASS' if diff <= WALL_P99_MARGIN_MS else 'FAIL'}"
        )
    else:
        wall_txt = f"wall p99 {wall99:.3f} ms, no noop samples to compare"
    return f"  {role:<13} {hook:<26} cpu p99 {cpu99:.3f} ms {cpu_ok}; {wall_txt}"


def wait_or_report(st: AirflowStack, dag_id: str, run_id: str) -> str:
    """The run's final state, or "stuck" (with the unfinished tasks printed) after the timeout."""
    try:
        return str(st.wait_run(dag_id, run_id, timeout=RUN_TIMEOUT))
    except StackError:
        tis = st.task_instances(dag_id, run_id)
        running = [f"{t['task_id']} (pid {t.get('pid')})" for t in tis if t["state"] == "running"]
        say(f"STUCK: {dag_id}/{run_id} unfinished after {RUN_TIMEOUT:.0f} s; running: {running}")
        return "stuck"


def part_hooks(keep: bool, rounds: int) -> None:
    say("PART 1: hook cost (measuring plugin + no-op listener, everything unreachable)")
    with stack("hooks", [MEASURE_PLUGIN], keep) as st:
        # Several rounds: with one (about 83 task runners) the nearest-rank p99 of a
        # task-runner hook is its single worst call.
        for n in range(1, rounds + 1):
            runs = {dag_id: st.trigger(dag_id) for dag_id in EXPECTED_STATES}
            for dag_id, run_id in runs.items():
                state = wait_or_report(st, dag_id, run_id)
                expected = EXPECTED_STATES[dag_id]
                say(f"hooks: round {n}/{rounds} {dag_id} {state} (expected {expected})")
        time.sleep(2.0)  # let the last task runners finish their before_stopping hooks
        samples_dir = st.home / "samples"
        st.stop()  # components' before_stopping hooks too
        samples = read_samples(samples_dir)
    say(f"hooks: {len(samples)} samples")
    report_hooks(samples)


# --- part 2: DAG wall time -------------------------------------------------------------------


@dataclass(frozen=True)
class RunTime:
    config: str
    run_duration: float  # end_date - start_date, from the REST API
    queued_to_end: float  # end_date - queued_at
    client_wall: float  # trigger call to final state seen by polling (0.5 s polls)
    stack_cpu: float  # CPU seconds of the whole stack's process tree during the run
    state: str


def stack_cpu(st: AirflowStack) -> float:
    """CPU seconds used so far by the stack's processes and their reaped descendants.

    A task runner's time moves into its supervisor's ``children_*`` counters when it is
    reaped, so the difference of two readings counts every process of the stack.
    """
    total = 0.0
    roots = [p.pid for p in getattr(st, "_procs", {}).values()]  # no public accessor yet
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
    return total


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def time_run(config: str, st: AirflowStack) -> RunTime:
    cpu0 = stack_cpu(st)
    t0 = time.perf_counter()
    run_id = st.trigger(CHAINS)
    state = wait_or_report(st, CHAINS, run_id)
    wall = time.perf_counter() - t0
    time.sleep(SETTLE)  # the last task runners exit after the run's end
    cpu = stack_cpu(st) - cpu0
    run = st.api("GET", f"/dags/{CHAINS}/dagRuns/{run_id}")
    end = _ts(run["end_date"]) if run["end_date"] else datetime.now(timezone.utc)
    result = RunTime(
        config,
        (end - _ts(run["start_date"])).total_seconds(),
        (end - _ts(run["queued_at"])).total_seconds(),
        wall,
        cpu,
        state,
    )
    say(
        f"dag: {config:<8} {state} run {result.run_duration:6.1f} s, queued→end "
        f"{result.queued_to_end:6.1f} s, client wall {wall:6.1f} s, stack CPU {cpu:6.1f} s"
    )
    return result


def part_dag(reps: int, keep: bool, with_disabled: bool) -> None:
    say(f"PART 2: {CHAINS} wall time, plugin vs baseline (plugin shadowed), {reps} reps each")
    configs = {
        "plugin": stack("plugin", [], keep),
        "baseline": stack("baseline", [SHADOW_PLUGIN], keep),
    }
    if with_disabled:
        configs["disabled"] = stack("disabled", [], keep, {"AIRFLOW__BKCI__ENABLED": "False"})
    exits, stacks = start_all(configs)
    results: list[RunTime] = []
    with exits:
        _check_plugin_presence(stacks)
        warm_up(stacks)
        for rep in range(reps):
            order = list(configs) if rep % 2 == 0 else list(reversed(configs))
            for config in order:
                results.append(time_run(config, stacks[config]))
    report_dag(results)


def warm_up(stacks: Mapping[str, AirflowStack]) -> None:
    """One uncounted run per stack, all at once: the first run after a start costs more."""
    runs = {config: st.trigger(CHAINS) for config, st in stacks.items()}
    for config, run_id in runs.items():
        say(f"dag: {config} warm-up run {wait_or_report(stacks[config], CHAINS, run_id)}")


def _check_plugin_presence(stacks: dict[str, AirflowStack]) -> None:
    for config, st in stacks.items():
        names = sorted(p["name"] for p in st.api("GET", "/plugins")["plugins"])
        listeners = [
            p["listeners"] for p in st.api("GET", "/plugins")["plugins"] if p["name"] == "bkci"
        ]
        say(f"dag: {config} plugins {names}, bkci listeners {listeners}")


def report_dag(results: list[RunTime]) -> None:
    print()
    print(f"DAG WALL TIME, {CHAINS} (60 tasks), seconds; median over runs; ratio plugin/baseline")
    head = f"{'figure':<22} {'plugin':>8} {'baseline':>9} {'ratio':>7}  runs (plugin | baseline)"
    print(head)
    print("-" * len(head))
    verdict = ""
    others = sorted({r.config for r in results} - {"plugin", "baseline"})
    for field in ("run_duration", "queued_to_end", "client_wall", "stack_cpu"):
        for other in ("plugin", *others):
            a = [getattr(r, field) for r in results if r.config == other]
            b = [getattr(r, field) for r in results if r.config == "baseline"]
            ratio = statistics.median(a) / statistics.median(b)
            runs = " ".join(f"{v:.1f}" for v in a) + " | " + " ".join(f"{v:.1f}" for v in b)
            label = field if other == "plugin" else f"{field} [{other}]"
            print(
                f"{label:<22} {statistics.median(a):8.1f} {statistics.median(b):9.1f} "
                f"{ratio:7.3f}  {runs}"
            )
            if field == "run_duration" and other == "plugin":
                ok = "PASS" if ratio <= DAG_RATIO_TARGET else "FAIL"
                verdict = f"TARGET: run_duration ratio <= {DAG_RATIO_TARGET:.2f}: {ratio:.3f} {ok}"
    states = sorted({f"{r.config} {r.state}" for r in results if r.state != "success"})
    states = states or ["all success"]
    print(verdict + f"  (run states: {', '.join(states)})")


# --- main ------------------------------------------------------------------------------------


def compile_package() -> None:
    """Byte-compile our package, as an installed wheel has it.

    An editable install under PYTHONDONTWRITEBYTECODE (set on this machine) has no
    .pyc files, so every task runner would compile each of our modules it imports:
    about 1 ms per module, paid in whichever hook imports it first.
    """
    import airflow_bkci

    compileall.compile_dir(Path(airflow_bkci.__file__).parent, quiet=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 3")
    parser.add_argument("--reps", type=int, help="bkci_chains runs per configuration")
    parser.add_argument("--skip-hooks", action="store_true", help="only part 2")
    parser.add_argument(
        "--hook-rounds", type=int, default=3, help="part 1: runs of every example DAG (3)"
    )
    parser.add_argument("--skip-dag", action="store_true", help="only part 1")
    parser.add_argument(
        "--with-disabled", action="store_true", help="also a stack with [bkci] enabled=False"
    )
    parser.add_argument("--skip-latency", action="store_true", help="skip part 3")
    parser.add_argument(
        "--burst", action="store_true", help="part 3: start the DAGs at once, not one by one"
    )
    parser.add_argument("--skip-diff", action="store_true", help="skip diff.py")
    parser.add_argument("--skip-delivery", action="store_true", help="skip delivery.py")
    parser.add_argument("--skip-cancel", action="store_true", help="skip cancel.py (PostgreSQL)")
    parser.add_argument(
        "--skip-dashboard", action="store_true", help="skip dashboard.py (Chromium, 20+ min)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the stacks' homes")
    args = parser.parse_args(argv)
    reps = args.reps or (2 if args.quick else 3)
    t0 = time.monotonic()
    compile_package()
    if not args.skip_hooks:
        part_hooks(args.keep, max(1, args.hook_rounds))
    if not args.skip_dag:
        part_dag(reps, args.keep, args.with_disabled)
    if not args.skip_latency:
        from latency import part_latency  # benchmarks/ is on sys.path as the script's folder

        part_latency(args.keep, say, burst=args.burst)
    # benchmarks/ is on sys.path as the script's folder
    if not args.skip_diff:
        import diff

        print("\nDIFF: diff_documents against jsonpatch.make_patch (benchmarks/diff.py)")
        diff.main([])
    if not args.skip_delivery:
        import delivery

        print("\nDELIVERY: bytes and dispatcher throughput (benchmarks/delivery.py)")
        delivery.main(["--reps", "1" if args.quick else "3"])
    if not args.skip_cancel:
        import cancel

        print("\nCANCEL: CancelService against the bulk PATCH on PostgreSQL (benchmarks/cancel.py)")
        cancel.main(["--reps", "1" if args.quick else "3", *(["--keep"] if args.keep else [])])
    if not args.skip_dashboard:
        import dashboard

        print("\nDASHBOARD: wall first render and browser memory (benchmarks/dashboard.py)")
        dashboard.main(
            ["--minutes", "2" if args.quick else "20", *(["--keep"] if args.keep else [])]
        )
    say(f"done in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
