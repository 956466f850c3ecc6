"""Topic identities: the evidence that the broker lost its data.

A topic that is deleted and created again (what a broker on memory storage does to every topic when
it restarts: the first client to ask for it, or ``stack up``, creates it anew) gets a new topic id.
``stack up`` records the id of each topic it ensures in ``<state_dir>/kafka/topic_ids.json``; ``stack
status``, a later ``stack up`` and the streaming jobs compare the broker's ids with that record. A
topic whose id changed or that is gone lost its messages and every group's committed offsets, and
each of them says so in one line instead of carrying on: a job that went on would re-read the new
topic from offset 0 while its committed offsets point past its end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.config import MmadsConfig
from infra.errors import BrokerDataLossError
from infra.processes import write_json_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicChange:
    """A topic whose identity differs from the recorded one.

    Attributes:
        topic: the topic name.
        recorded: the id recorded when the topic was ensured.
        current: the id the broker reports now (None: the topic is gone).
    """

    topic: str
    recorded: str
    current: str | None


def record_path(cfg: MmadsConfig) -> Path:
    """The file of recorded topic ids."""
    return Path(cfg.state_dir) / "kafka" / "topic_ids.json"


def load_recorded(cfg: MmadsConfig) -> dict[str, str]:
    """Topic name -> the id recorded for it (empty when nothing is recorded or the file is unreadable)."""
    path = record_path(cfg)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        logger.warning("ignoring unreadable topic id record %s", path)
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def record(cfg: MmadsConfig, ids: Mapping[str, str | None]) -> None:
    """Add the ids of topics not recorded yet (a recorded id is never overwritten)."""
    known = load_recorded(cfg)
    new = {t: i for t, i in ids.items() if i is not None and t not in known}
    if not new:
        return
    path = record_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {**known, **new}, indent=1)


def forget(cfg: MmadsConfig) -> None:
    """Drop the record (``stack down`` of a memory broker: its topics end with it, on purpose)."""
    record_path(cfg).unlink(missing_ok=True)


def describe_ids(admin: object, topics: Iterable[str]) -> dict[str, str | None]:
    """Ask the broker for the ids of ``topics`` (None for a topic it does not have).

    Args:
        admin: a ``KafkaAdminClient``.
        topics: topic names.
    """
    names = list(topics)
    if not names:
        return {}
    out: dict[str, str | None] = dict.fromkeys(names)
    for t in admin.describe_topics(names):  # type: ignore[attr-defined]
        if t.get("error_code") == 0 and t.get("topic_id"):
            out[str(t["name"])] = str(t["topic_id"])
    return out


def changes(recorded: Mapping[str, str], current: Mapping[str, str | None]) -> list[TopicChange]:
    """The topics of ``current`` whose id differs from the recorded one (unrecorded topics are skipped)."""
    return [TopicChange(t, recorded[t], cur) for t, cur in sorted(current.items())
            if t in recorded and cur != recorded[t]]


def loss_error(cfg: MmadsConfig, found: list[TopicChange], what_now: str) -> BrokerDataLossError:
    """The error every detector raises or prints: one line naming the cause and each topic."""
    k = cfg.kafka
    if k.embedded and cfg.profile == "embedded" and k.storage == "memory":
        cause = "broker restarted with memory storage: possible data loss"
    else:
        cause = "topics were deleted or recreated on the broker: possible data loss"
    recreated = [f"{c.topic} (id {c.recorded}, now {c.current})" for c in found if c.current is not None]
    gone = [c.topic for c in found if c.current is None]
    parts = ([f"recreated: {', '.join(recreated)}"] if recreated else []) + ([f"gone: {', '.join(gone)}"]
                                                                          if gone else [])
    return BrokerDataLossError(f"{cause}: topics {'; '.join(parts)}; their messages and committed offsets from "
                               f"before are lost. {what_now}", [c.topic for c in found])
