"""Operators for DAG authors."""

from airflow_bkci.operators.cancel import BatchCancelOperator
from airflow_bkci.operators.quality_gate import QualityGateOperator

__all__ = ["BatchCancelOperator", "QualityGateOperator"]
