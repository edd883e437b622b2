"""``bastion demo``: a customer-operations agent over a small SQLite shop, end to end.

``shop`` (the systems of record), ``tools`` (the agent's tools and their contracts), ``agent``
(the agent and its scripted conversations), ``run`` (the driver `bastion demo` calls) and
``_child`` (the worker process the demo kills). Shipped in the package so that the demo runs
from a wheel install with no services and no API key.
"""
