"""Entity ids: the one stable mapping of dataset ids (integers or strings) to int64.

Every part of mmads (``mmads data validate``, ``mmads events replay``, the streaming jobs, training
and the ranking service) keys items and users by a non-negative int64. A dataset or a producer may
write an id as an integer or as a string; :func:`id_to_int64` turns either into that int64, with
the same answer in every process, so no table of ids has to be shared:

* an integer ``0 <= v < 2**63`` is itself;
* a string in canonical decimal form (``"0"``, ``"42"``: digits, no sign, no leading zero, below
  ``2**63``) is the integer it spells, so ``"42"`` and ``42`` are the same id (a Kafka key or a
  URL path can only carry text);
* any other non-empty string of at most 256 bytes (``"B00012"``, ``"0042"``, ``"user-7"``) is the
  first 8 bytes of its UTF-8 BLAKE2b digest (big-endian) with bit 62 set and bit 63 cleared: a value in
  ``[2**62, 2**63)``, clear of the integer ids datasets use in practice.

Two different strings may in principle share a hash (about 1 in 4e18 per pair); ``mmads data
validate`` detects it (and a string colliding with an integer id) and refuses the dataset.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from infra.errors import MmadsError

INT64_MAX = 2**63 - 1
STRING_ID_BASE = 2**62  # hashed string ids live in [2**62, 2**63)
_LOW_62 = STRING_ID_BASE - 1
MAX_ID_BYTES = 256  # the service keeps a string id's spelling in a Milvus VARCHAR
_CANONICAL = re.compile(r"0|[1-9][0-9]{0,18}")


class InvalidIdError(MmadsError, ValueError):
    """A value cannot be an entity id (negative, too large, empty, or neither int nor string).

    Attributes:
        value: the offending value.
    """

    def __init__(self, value: object, why: str) -> None:
        super().__init__(f"invalid id {value!r}: {why}")
        self.value = value


def hash_string_id(text: str) -> int:
    """The int64 of a non-canonical string id (BLAKE2b, 8 bytes, bit 62 set, bit 63 clear)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") & _LOW_62) | STRING_ID_BASE


def id_to_int64(value: object) -> int:
    """Map a dataset or event id (int or str) to its int64 (see the module docstring).

    Args:
        value: a Python or NumPy integer, or a string.

    Returns:
        A non-negative int64.

    Raises:
        InvalidIdError: a bool, float, negative or too large integer, an empty string, or another type.
    """
    if isinstance(value, bool | np.bool_):
        raise InvalidIdError(value, "a boolean is not an id")
    if isinstance(value, int | np.integer):
        v = int(value)
        if not 0 <= v <= INT64_MAX:
            raise InvalidIdError(value, f"an integer id must be in 0..{INT64_MAX}")
        return v
    if isinstance(value, str):
        if not value:
            raise InvalidIdError(value, "an id cannot be the empty string")
        if len(value.encode("utf-8")) > MAX_ID_BYTES:
            raise InvalidIdError(value, f"a string id is at most {MAX_ID_BYTES} bytes of UTF-8")
        if _CANONICAL.fullmatch(value) and int(value) <= INT64_MAX:
            return int(value)
        return hash_string_id(value)
    raise InvalidIdError(value, f"an id is an integer or a string, not {type(value).__name__}")


def is_hashed(value: object) -> bool:
    """True when ``value`` is a string that :func:`id_to_int64` hashes (not a canonical integer)."""
    return isinstance(value, str) and bool(value) and not (
        _CANONICAL.fullmatch(value) is not None and int(value) <= INT64_MAX)
