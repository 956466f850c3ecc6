"""Kafka consumers: the item indexer, the behavior-feature job and the impression logger.

Entry points (the ``mmads`` CLI calls them): :func:`streaming.item_indexer.run_items`,
:func:`streaming.behavior_job.run_behaviors`, :func:`streaming.impression_logger.run_impressions`,
:func:`streaming.reindex.reindex`, :func:`streaming.replay.replay`, :func:`streaming.stats.wait_caught_up`.
Nothing here connects to a service at import time.
"""
