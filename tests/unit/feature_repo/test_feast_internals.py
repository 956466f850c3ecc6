import pytest
from feast.infra.online_stores.sqlite import SqliteOnlineStore

from feature_repo.feast_internals import check_feast_internals
from infra.errors import FeatureError


def test_the_private_feast_calls_mmads_uses_are_where_they_were():
    # fails by name after a Feast upgrade that moves or changes one of them
    check_feast_internals()


def test_a_moved_private_call_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delattr(SqliteOnlineStore, "_get_conn")
    with pytest.raises(FeatureError, match=r"SqliteOnlineStore\._get_conn is gone.*feast_internals\.py"):
        check_feast_internals()
