"""Feast entities: the user and the item, both keyed by an Int64 id."""

from __future__ import annotations

from feast import Entity
from feast.value_type import ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="A shopper.")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64, description="An ad item.")
