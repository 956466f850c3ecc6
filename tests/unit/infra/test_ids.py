"""The one id mapping (infra/ids.py): integers pass, canonical decimals are integers, strings hash."""

from __future__ import annotations

import numpy as np
import pytest

from infra.ids import INT64_MAX, STRING_ID_BASE, InvalidIdError, hash_string_id, id_to_int64, is_hashed


def test_integers_and_canonical_decimals_are_themselves() -> None:
    assert id_to_int64(0) == 0
    assert id_to_int64(np.int64(42)) == 42
    assert id_to_int64("42") == 42
    assert id_to_int64(str(INT64_MAX)) == INT64_MAX
    assert not is_hashed("42") and is_hashed("042")


def test_other_strings_hash_stably_into_the_upper_range() -> None:
    v = id_to_int64("B00012")
    assert STRING_ID_BASE <= v <= INT64_MAX
    assert v == hash_string_id("B00012")
    # the value is part of the contract (docs/data.md): it must never change between releases
    assert id_to_int64("user-7") == 9138419370716262553
    assert id_to_int64("0042") != 42 and id_to_int64("0042") >= STRING_ID_BASE
    assert id_to_int64(str(INT64_MAX + 1)) >= STRING_ID_BASE  # too large for an integer: a string id


@pytest.mark.parametrize(("value", "why"), [
    (True, "a boolean is not an id"), (-1, "an integer id must be in"), (2**63, "an integer id must be in"),
    ("", "empty string"), (1.5, "an id is an integer or a string, not float"), (None, "not NoneType"),
    ("x" * 257, "at most 256 bytes"),
])
def test_invalid_ids(value: object, why: str) -> None:
    with pytest.raises(InvalidIdError, match=why) as info:
        id_to_int64(value)
    assert info.value.value == value
