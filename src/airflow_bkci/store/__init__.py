"""The status store: builds, their nodes and history in SQLite or PostgreSQL."""

from airflow_bkci.store.results import ApplyResult, Transition
from airflow_bkci.store.store import Store

__all__ = ["ApplyResult", "Store", "Transition"]
