"""Nothing crosses from one execution to the next: each sandbox is used once and destroyed.

Each case is a pair of programs; the second prints ESCAPED if it sees what the first left.
The control runs them without isolation (two ``python3`` processes in one directory, or one
reused interpreter, the naive way to run snippets), which must leak; the sandbox must not.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from sandbox_helpers import run_unisolated

from bastion.sandbox import NamespaceSandbox


@dataclass(frozen=True)
class Pair:
    id: str
    first: str
    second: str
    same_interpreter: bool = False  # the control reuses one interpreter for both


TAG = uuid.uuid4().hex[:12]

PAIRS = [
    Pair(
        "workdir_file",
        "open('leak.txt', 'w').write('x')\n",
        "import os\nprint('ESCAPED' if os.path.exists('leak.txt') else 'clean')\n",
    ),
    Pair(
        "tmp_file",
        f"open('/tmp/bastion-leak-{TAG}', 'w').write('x')\n",
        f"import os\nprint('ESCAPED' if os.path.exists('/tmp/bastion-leak-{TAG}') else 'clean')\n",
    ),
    Pair(
        "environment_variable",
        "import os\nos.environ['BASTION_LEAK'] = 'x'\n",
        "import os\nprint('ESCAPED' if 'BASTION_LEAK' in os.environ else 'clean')\n",
        same_interpreter=True,
    ),
    Pair(
        "module_state",
        "import json\njson.BASTION_LEAK = 1\n",
        "import json\nprint('ESCAPED' if hasattr(json, 'BASTION_LEAK') else 'clean')\n",
        same_interpreter=True,
    ),
    Pair(
        "background_process",
        # A process left behind keeps writing; the next execution must not see it at work.
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    null = os.open(os.devnull, os.O_RDWR)\n"
        "    for fd in (0, 1, 2): os.dup2(null, fd)  # let the caller see EOF now\n"
        f"    p = '/tmp/bastion-bg-{TAG}'\n"
        "    open(p, 'w').close()\n"
        "    for i in range(80):\n"
        "        try: f = open(p, 'r+')  # stops once the test has removed the file\n"
        "        except OSError: break\n"
        "        f.truncate(); f.write(str(i)); f.close(); time.sleep(0.05)\n"
        "    os._exit(0)\n",
        # Watches for a while (not a fixed instant) so a busy machine cannot hide the writer.
        "import time\n"
        "seen = set()\n"
        "for _ in range(40):\n"
        f"    try: seen.add(open('/tmp/bastion-bg-{TAG}').read())\n"
        "    except OSError: pass\n"
        "    time.sleep(0.05)\n"
        "print('ESCAPED' if len(seen) > 1 else 'clean')\n",
    ),
]


def _cleanup() -> None:
    for name in (f"bastion-leak-{TAG}", f"bastion-bg-{TAG}"):
        Path("/tmp", name).unlink(missing_ok=True)


@pytest.mark.parametrize("pair", PAIRS, ids=[p.id for p in PAIRS])
def test_control_leaks(pair: Pair, tmp_path: Path) -> None:
    try:
        if pair.same_interpreter:
            result = run_unisolated(pair.first + pair.second, tmp_path)
        else:
            run_unisolated(pair.first, tmp_path)
            result = run_unisolated(pair.second, tmp_path)
        assert "ESCAPED" in result.stdout, result
    finally:
        _cleanup()


@pytest.mark.parametrize("pair", PAIRS, ids=[p.id for p in PAIRS])
async def test_sandbox_does_not_leak(pair: Pair, any_sandbox: NamespaceSandbox) -> None:
    sandbox = any_sandbox
    try:
        first = await sandbox.execute(pair.first)
        assert first.ok, first
        second = await sandbox.execute(pair.second)
        assert second.ok and second.stdout == "clean\n", second
    finally:
        _cleanup()


async def test_random_state_is_not_shared_between_sandboxes() -> None:
    """Sandboxes forked from one zygote still draw their own numbers (``random`` reseeds after
    fork; numpy, which does not, is preloaded in each pooled sandbox, never in the zygote)."""
    import importlib.util

    from sandbox_helpers import require

    from bastion.sandbox import NamespaceOptions
    from bastion.sandbox._local import DEFAULT_PRELOAD

    require(importlib.util.find_spec("numpy") is not None, "numpy is not installed (sandbox extra)")
    opts = NamespaceOptions(pool_size=1, preload=(*DEFAULT_PRELOAD, "numpy.random"))
    code = "import random, numpy\nprint(random.random(), numpy.random.rand())\n"
    async with NamespaceSandbox(opts) as sb:
        outs = [(await sb.execute(code)).stdout for _ in range(3)]
    firsts = {o.split()[0] for o in outs}
    seconds = {o.split()[1] for o in outs}
    assert len(firsts) == 3 and len(seconds) == 3, outs
