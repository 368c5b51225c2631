"""BK-CI build-status reporting and batch cancel for Apache Airflow 3.3."""

__version__ = "0.1.0"
