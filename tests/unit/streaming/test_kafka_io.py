"""Client-factory details of :mod:`streaming.kafka_io` that need no broker."""

from __future__ import annotations

import logging

from streaming.kafka_io import SlowStepFilter


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("kafka.net.selector", logging.WARNING, __file__, 1, message, None, None)


def test_slow_step_warnings_under_a_second_are_dropped_and_the_rest_kept() -> None:
    keep = SlowStepFilter().filter
    # the line kafka-python 3.0 logs while a rebalance listener restores state on its IO thread
    assert not keep(_record("Task <kafka.net.selector.Task object at 0x7f5b> ran for 0.223s (>0.100s threshold). "
                            "It is blocking the event loop -- likely a tight sync loop inside a coroutine."))
    assert keep(_record("Task <kafka.net.selector.Task object at 0x7f5b> ran for 1.500s (>0.100s threshold)."))
    assert keep(_record("Metadata refresh: failed Cancelled"))
