import json

import pytest

from serving.errors import RequestError
from serving.schemas import INT64_MAX, Limits, RankRequest, RecommendRequest, ReloadRequest, parse_request

LIMITS = Limits(max_candidates=5, max_k=3)


def _rank(body: object) -> RankRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(RankRequest, raw, LIMITS)


def test_valid_rank_request_parses():
    req = _rank({"user_id": 7, "candidate_item_ids": [3, 1, 2], "top_k": 2})
    assert (req.user_id, req.candidate_item_ids, req.top_k) == (7, [3, 1, 2], 2)


@pytest.mark.parametrize(("body", "status", "message"), [
    (b'{"user_id": 1, "candidate_item_ids": [1', 400, "malformed JSON"),
    (b"", 400, "body is empty"),
    (b"[1, 2]", 422, "Input should be an object"),
    ({"user_id": "", "candidate_item_ids": [1]}, 422, "user_id: invalid id '': an id cannot be the empty string"),
    ({"user_id": 1.0, "candidate_item_ids": [1]}, 422, "user_id: invalid id 1.0: an id is an integer or a string"),
    ({"user_id": True, "candidate_item_ids": [1]}, 422, "user_id: invalid id True: a boolean is not an id"),
    ({"user_id": 1, "candidate_item_ids": "1,2"}, 422, "candidate_item_ids: Input should be a valid array"),
    ({"user_id": 1, "candidate_item_ids": [1, None]}, 422, "candidate_item_ids.1: invalid id None"),
    ({"user_id": 1, "candidate_item_ids": [2, "2"]}, 422, "duplicate ids: 2"),
    ({"user_id": 1}, 422, "candidate_item_ids: Field required"),
    ({"user_id": 1, "candidate_item_ids": [1], "extra": 1}, 422, "extra: Extra inputs are not permitted"),
    ({"user_id": 1, "candidate_item_ids": []}, 422, "candidate_item_ids is empty"),
    ({"user_id": 1, "candidate_item_ids": list(range(6))}, 422, "has 6 ids, more than the limit of 5"),
    ({"user_id": 1, "candidate_item_ids": [4, 2, 4, 2, 1]}, 422, "duplicate ids: 2, 4"),
    ({"user_id": 1, "candidate_item_ids": [1, -2]}, 422, "candidate_item_ids.1: invalid id -2: an integer id must"),
    ({"user_id": -1, "candidate_item_ids": [1]}, 422, "user_id: invalid id -1: an integer id must be in 0.."),
    ({"user_id": INT64_MAX + 1, "candidate_item_ids": [1]}, 422, "user_id: invalid id 9223372036854775808"),
    ({"user_id": 1, "candidate_item_ids": [1], "top_k": 0}, 422, "top_k: Input should be greater than or equal to 1"),
    ({"user_id": 1, "candidate_item_ids": [1], "top_k": 4}, 422, "top_k = 4 is more than the limit of 3"),
])
def test_bad_rank_requests(body: object, status: int, message: str):
    with pytest.raises(RequestError, match=message) as info:
        _rank(body)
    assert info.value.status == status


def test_many_errors_are_summarised():
    with pytest.raises(RequestError, match=r"and 2 more") as info:
        _rank({"user_id": 1, "candidate_item_ids": [-1, -2, -3, -4, -5]})
    assert str(info.value).count("an integer id must be in 0..") == 3


def test_string_ids_are_kept_as_written():
    req = _rank({"user_id": "user-7", "candidate_item_ids": ["B001", 5, "7"]})
    assert (req.user_id, req.candidate_item_ids) == ("user-7", ["B001", 5, "7"])


def test_recommend_k_limits():
    assert parse_request(RecommendRequest, b'{"user_id": 3}', LIMITS).k is None  # service default
    assert parse_request(RecommendRequest, b'{"user_id": 3, "k": 3}', LIMITS).k == 3
    with pytest.raises(RequestError, match="k = 4 is more than the limit of 3") as info:
        parse_request(RecommendRequest, b'{"user_id": 3, "k": 4}', LIMITS)
    assert info.value.status == 422
    with pytest.raises(RequestError, match="k: Input should be greater than or equal to 1"):
        parse_request(RecommendRequest, b'{"user_id": 3, "k": 0}', LIMITS)


def test_default_limits_come_from_serving_config():
    req = RankRequest.model_validate_json(json.dumps({"user_id": 1, "candidate_item_ids": list(range(1000))}))
    assert len(req.candidate_item_ids) == 1000
    with pytest.raises(ValueError, match="more than the limit of 1000"):
        RankRequest.model_validate_json(json.dumps({"user_id": 1, "candidate_item_ids": list(range(1001))}))


def test_reload_request_fields():
    req = parse_request(ReloadRequest, b'{"run_dir": "/x", "model": "simtier"}', LIMITS)
    assert (req.run_dir, req.model) == ("/x", "simtier")
    with pytest.raises(RequestError, match="run_dir: Input should be a valid string"):
        parse_request(ReloadRequest, b'{"run_dir": 5}', LIMITS)
