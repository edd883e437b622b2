"""``python -m bastion.sandbox``: the same commands as ``bastion sandbox``."""

from bastion.sandbox.cli import app

if __name__ == "__main__":
    app(prog_name="bastion sandbox")
