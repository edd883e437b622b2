"""Model providers behind one protocol, and the router that picks and falls back between them.

A model is named by one string, ``"provider:model"`` (``"openai:gpt-4o-mini"``,
``"local:smollm2"``, ``"scripted:demo"``). The engine only ever sees ``ModelProvider``.
"""

from bastion.models._base import ModelProvider, ModelRef, parse_model_ref
from bastion.models._router import ModelRouter

__all__ = ["ModelProvider", "ModelRef", "ModelRouter", "parse_model_ref"]
