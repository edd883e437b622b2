"""``python -m bastion.sandbox``: the same commands as ``bastion sandbox``."""

from bastion.sandbox.cli import app

app(prog_name="bastion sandbox")
