"""A minimal Airflow user for the API tests' fake auth managers."""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser


class User(BaseUser):
    def __init__(self, name: str) -> None:
        self.name = name

    def get_id(self) -> str:
        return self.name

    def get_name(self) -> str:
        return self.name
