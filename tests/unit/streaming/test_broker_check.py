"""The streaming jobs' offset check: a record below the next offset already handled means a lost log."""

from __future__ import annotations

from typing import NamedTuple

from streaming.broker_check import check_offsets


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int


def test_offsets_that_go_back_are_reported_once_per_partition() -> None:
    handled = {("t", 0): 150, ("t", 1): 7}
    batch = [Rec("t", 0, 0), Rec("t", 0, 1), Rec("t", 1, 7), Rec("t", 2, 0)]
    assert check_offsets(batch, handled) == [(0, 0, 150)]


def test_a_fresh_partition_and_a_continuing_one_are_fine() -> None:
    assert check_offsets([Rec("t", 0, 150), Rec("t", 3, 0)], {("t", 0): 150}) == []
    assert check_offsets([], {("t", 0): 150}) == []
