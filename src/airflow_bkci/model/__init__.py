"""The BK-CI state model: statuses, the state machine, events and the build tree.

Nothing here imports Airflow except :mod:`airflow_bkci.model.mapping`.
"""

from airflow_bkci.model.event import EventKey, NodeRef, StatusEvent
from airflow_bkci.model.fsm import Decision, decide
from airflow_bkci.model.status import BuildStatus, Rank

__all__ = ["BuildStatus", "Decision", "EventKey", "NodeRef", "Rank", "StatusEvent", "decide"]
