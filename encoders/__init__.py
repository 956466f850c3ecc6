"""SCL item encoders: frozen MiniLM + EfficientNet-Lite0 backbones, trained projection heads.

Public API: :class:`ItemEncoder` (load an artifact, ``encode_items``, ``encode_queries``),
:func:`pretrained_encoder` (the no-SCL baseline), :func:`train_scl` and :func:`evaluate_scl`.
Imports only :mod:`infra`; knows nothing of Kafka, Feast or Milvus.
"""

from encoders.evaluate import evaluate_scl
from encoders.inference import ItemEncoder, pretrained_encoder
from encoders.train import train_scl

__all__ = ["ItemEncoder", "evaluate_scl", "pretrained_encoder", "train_scl"]
