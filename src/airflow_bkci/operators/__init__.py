"""Operators for DAG authors."""

from airflow_bkci.operators.cancel import BatchCancelOperator

__all__ = ["BatchCancelOperator"]
