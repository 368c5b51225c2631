"""Which pipelines the wall shows: the URL's, a tag's, the configured ones, or all readable.

The first that says something wins: ``?pipelines=`` (source ``url``), ``?tag=``
(``tag``), ``[bkci] dashboard_pipelines`` (``config``), ``[bkci] dashboard_tag``
(``config_tag``), else every pipeline the viewer may read (``all``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Selection", "Source", "choose", "split_ids"]


class Source(str, enum.Enum):
    URL = "url"
    TAG = "tag"
    CONFIG = "config"
    CONFIG_TAG = "config_tag"
    ALL = "all"

    @property
    def named(self) -> bool:
        """The pipelines were named one by one: those not shown are reported as missing."""
        return self in (Source.URL, Source.CONFIG)


@dataclass(frozen=True, slots=True)
class Selection:
    """Where the wall's pipelines come from, and the pipelines (or the tag) it names."""

    source: Source
    dag_ids: tuple[str, ...] = ()
    tag: str | None = None


def split_ids(values: Iterable[str]) -> tuple[str, ...]:
    """``?pipelines=a,b&pipelines=c`` as ("a", "b", "c"): in order, once each, blanks dropped."""
    return tuple(dict.fromkeys(p.strip() for v in values for p in v.split(",") if p.strip()))


def choose(
    pipelines: Sequence[str],
    tag: str | None,
    configured: Callable[[], Sequence[str]],
    configured_tag: Callable[[], str | None],
) -> Selection:
    """The selection the request and ``[bkci]`` make; the config is read only when needed."""
    if pipelines:
        return Selection(Source.URL, tuple(pipelines))
    if tag:
        return Selection(Source.TAG, tag=tag)
    named = tuple(configured())
    if named:
        return Selection(Source.CONFIG, named)
    config_tag = configured_tag()
    if config_tag:
        return Selection(Source.CONFIG_TAG, tag=config_tag)
    return Selection(Source.ALL)
