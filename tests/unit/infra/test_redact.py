import io
import logging

from infra.redact import RedactingFilter, redact, redact_logs, secret_values
from streaming.dlq import DeadLetter, parse_dead_letter


class _Record:
    topic, partition, offset, key, value, timestamp = "items", 1, 7, b"k", b"{}", 1


def test_redact_replaces_secret_values_only(monkeypatch):
    monkeypatch.setenv("MMADS_KAFKA_PASSWORD", "hunter22")
    monkeypatch.setenv("MMADS_MILVUS_TOKEN", "root:Milvus")
    monkeypatch.setenv("MMADS_KAFKA_USERNAME", "alice")  # a user name is not a secret
    monkeypatch.setenv("SOME_TOKEN", "abc")  # too short to redact safely
    assert "hunter22" in secret_values() and "alice" not in secret_values()
    text = "login alice/hunter22 failed at http://root:Milvus@milvus:19530 (abc)"
    assert redact(text) == "login alice/*** failed at http://***@milvus:19530 (abc)"


def test_log_lines_and_tracebacks_are_redacted(monkeypatch):
    monkeypatch.setenv("MMADS_SERVING_TOKEN", "s3cr3t-token")
    stream = io.StringIO()
    logger = logging.getLogger("mmads.test_redact")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    redact_logs(logger)
    redact_logs(logger)  # idempotent
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    try:
        raise ValueError("bad bearer s3cr3t-token")
    except ValueError:
        logger.exception("request with %s refused", "s3cr3t-token")
    out = stream.getvalue()
    assert "s3cr3t-token" not in out
    assert "request with *** refused" in out and "bad bearer ***" in out
    logger.removeHandler(handler)


def test_dead_letter_reason_is_redacted(monkeypatch):
    monkeypatch.setenv("MMADS_KAFKA_PASSWORD", "hunter22")
    letter = DeadLetter.of(_Record(), "sink said: auth hunter22 rejected")
    doc = parse_dead_letter(letter.to_json())
    assert doc["error"] == "sink said: auth *** rejected"
    assert doc["original_bytes"] == b"{}"
