from serving.retrieval import VECTOR_FIELD, merge_hits


def test_vector_field_matches_the_indexer():
    from streaming.milvus_sink import VECTOR_FIELD as INDEXER_FIELD

    assert VECTOR_FIELD == INDEXER_FIELD


def test_merge_keeps_best_similarity_dedups_and_excludes_history():
    hits = [
        [(10, 0.9), (11, 0.8), (12, 0.1)],
        [(11, 0.95), (13, 0.7), (10, 0.2), (99, 0.99)],
    ]
    assert merge_hits(hits, exclude={99}, limit=10) == [11, 10, 13, 12]
    assert merge_hits(hits, exclude={99}, limit=2) == [11, 10]
    assert merge_hits(hits, exclude=set(), limit=1) == [99]


def test_merge_breaks_ties_by_id_and_handles_empty():
    assert merge_hits([[(5, 0.5), (3, 0.5)]], exclude=set(), limit=5) == [3, 5]
    assert merge_hits([], exclude=set(), limit=5) == []
