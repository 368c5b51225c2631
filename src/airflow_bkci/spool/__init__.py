"""Worker-side buffer: a local SQLite spool, its record format and its forwarder."""

from airflow_bkci.spool.forwarder import BatchResult, Forwarder
from airflow_bkci.spool.records import record_to_event
from airflow_bkci.spool.relay import relay
from airflow_bkci.spool.spool import Spool

__all__ = ["BatchResult", "Forwarder", "Spool", "record_to_event", "relay"]
