"""Test helpers shipped for users and used by Bastion's own tests (the scripted and function
models are providers of ``bastion.models``, the ``scripted:`` kind; they are re-exported here).

``ScriptedModel``: a queue of responses that records the requests it got and fails on an
unexpected or unconsumed call. ``FunctionModel``: your function decides each response.
``FakeClock``: time that moves only when told.
"""

from bastion.models._scripted import (
    FunctionModel,
    ScriptedModel,
    UnconsumedResponses,
    UnexpectedModelCall,
    call,
    reply,
)
from bastion.testing._clock import FakeClock
from bastion.testing._http import HttpStubServer, RecordedRequest, StubResponse

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
