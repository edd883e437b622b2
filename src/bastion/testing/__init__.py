"""Test helpers shipped for users and used by Bastion's own tests.

``ScriptedModel``: a queue of responses that records the requests it got and fails on an
unexpected or unconsumed call. ``FunctionModel``: your function decides each response.
``FakeClock``: time that moves only when told.
"""

from bastion.testing._clock import FakeClock
from bastion.testing._http import HttpStubServer, RecordedRequest, StubResponse
from bastion.testing._models import (
    FunctionModel,
    ScriptedModel,
    UnconsumedResponses,
    UnexpectedModelCall,
    call,
    reply,
)

__all__ = [
    "FakeClock",
    "FunctionModel",
    "HttpStubServer",
    "RecordedRequest",
    "ScriptedModel",
    "StubResponse",
    "UnconsumedResponses",
    "UnexpectedModelCall",
    "call",
    "reply",
]
