"""Dynamic task mapping: one mapped task instance per item, then a reduce."""

from __future__ import annotations

from airflow.sdk import DAG, task


@task
def targets() -> list[str]:
    return ["linux-x64", "linux-arm64", "macos", "windows"]


@task
def package(target: str) -> int:
    return len(target)


@task
def publish(sizes: list[int]) -> int:
    return sum(sizes)


with DAG("bkci_mapped", schedule=None, catchup=False, tags=["bkci-example"]):
    publish(package.expand(target=targets()))  # type: ignore[arg-type]
