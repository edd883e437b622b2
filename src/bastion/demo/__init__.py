"""``bastion demo``: a customer-operations agent over a small SQLite shop, end to end.

``shop`` (the systems of record), ``tools`` (the agent's tools and their contracts), ``agent``
(the agent and its scripted conversations), ``run`` (the driver `bastion demo` calls),
``_setup`` (composing Bastion the same way in every process), ``_child`` (the worker process
the demo kills) and ``_report`` (the checks and the closing summary). Shipped in the package so
that the demo runs from a wheel install with no services and no API key.
"""
