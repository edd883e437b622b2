"""Behaviour of one execution as a caller sees it: output, status, files in and out, identity."""

from __future__ import annotations

import importlib.util

import pytest
from sandbox_helpers import require

from bastion.core.errors import UserError
from bastion.sandbox import Limits, NamespaceSandbox


async def test_stdout_stderr_and_status(sandbox: NamespaceSandbox) -> None:
    r = await sandbox.execute(
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)"
    )
    assert (r.stdout, r.stderr, r.exit_status, r.killed_reason) == ("out\n", "err\n", 3, None)
    assert not r.ok and r.backend == "namespaces" and r.timing is not None


async def test_uncaught_exception_reads_like_python(sandbox: NamespaceSandbox) -> None:
    r = await sandbox.execute("x = 1\n\nraise ValueError('bad input')\n")
    assert r.exit_status == 1 and r.killed_reason is None
    assert 'File "main.py", line 3, in <module>' in r.stderr
    assert "raise ValueError('bad input')" in r.stderr and "ValueError: bad input" in r.stderr
    assert "_child" not in r.stderr


async def test_system_exit_with_message(sandbox: NamespaceSandbox) -> None:
    r = await sandbox.execute("raise SystemExit('giving up')")
    assert r.exit_status == 1 and r.stderr == "giving up\n"


async def test_syntax_error_is_a_result(sandbox: NamespaceSandbox) -> None:
    r = await sandbox.execute("def f(:\n")
    assert r.exit_status == 1 and "SyntaxError" in r.stderr


async def test_identity_and_environment(sandbox: NamespaceSandbox) -> None:
    code = (
        "import os, socket, sys\n"
        "print(os.getuid(), os.getgid(), os.getpid(), socket.gethostname(), os.getcwd())\n"
        "print(sorted(os.environ))\n"
        "print(repr(sys.stdin.read()))\n"
    )
    r = await sandbox.execute(code)
    lines = r.stdout.splitlines()
    uid, gid, pid, host, cwd = lines[0].split()
    assert (uid, gid, host, cwd) == ("1000", "1000", "sandbox", "/work")
    assert int(pid) < 10  # a pid namespace of its own
    assert lines[1] == str(
        sorted(
            [
                "HOME",
                "LANG",
                "MKL_NUM_THREADS",
                "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS",
                "PATH",
                "TMPDIR",
            ]
        )
    )
    assert lines[2] == "''"


async def test_files_in_and_out(sandbox: NamespaceSandbox) -> None:
    code = (
        "import os\n"
        "rows = open('data/in.csv').read().splitlines()\n"
        "os.makedirs('out/deep', exist_ok=True)\n"
        "open('out/deep/count.txt', 'w').write(str(len(rows)))\n"
        "open('result.csv', 'w').write(rows[0].upper())\n"
        "open('ignored.log', 'w').write('not asked for')\n"
        "open('blob.bin', 'wb').write(bytes(range(256)))\n"
    )
    r = await sandbox.execute(
        code,
        files={"data/in.csv": b"a,b\n1,2\n3,4\n"},
        outputs=["*.csv", "out/**/*.txt", "blob.bin"],
    )
    assert r.ok, r
    assert r.files == {
        "result.csv": b"A,B",
        "out/deep/count.txt": b"3",
        "blob.bin": bytes(range(256)),
    }


async def test_returned_files_are_capped(sandbox: NamespaceSandbox) -> None:
    code = "open('a.txt', 'w').write('x' * 3000)\nopen('b.txt', 'w').write('y' * 10)\n"
    r = await sandbox.execute(code, outputs=["*.txt"], limits=Limits(output_file_bytes=2048))
    assert "a.txt" not in r.files and "limit" in r.files_skipped["a.txt"]
    assert r.files == {"b.txt": b"y" * 10}


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "", "a/../../b", "./a"])
async def test_input_names_must_stay_in_the_workdir(sandbox: NamespaceSandbox, name: str) -> None:
    with pytest.raises(UserError):
        await sandbox.execute("print(1)", files={name: b"x"})


async def test_output_is_truncated_and_marked(sandbox: NamespaceSandbox) -> None:
    r = await sandbox.execute("print('y' * 5000)", limits=Limits(max_output_bytes=1000))
    assert r.stdout == "y" * 1000 and r.stdout_truncated and not r.stderr_truncated
    assert r.killed_reason == "output_limit"


async def test_unicode_output(sandbox: NamespaceSandbox) -> None:
    r = await sandbox.execute("print('naïve — 数据 ✓')")
    assert r.stdout == "naïve — 数据 ✓\n"


async def test_usage_is_reported(sandbox: NamespaceSandbox) -> None:
    r = await sandbox.execute("import time\nwhile time.process_time() < 0.2: pass\n")
    assert r.ok and r.usage.cpu_user_seconds + r.usage.cpu_system_seconds >= 0.15
    assert r.usage.max_rss_kb > 0


async def test_fork_bomb_is_contained(sandbox: NamespaceSandbox) -> None:
    code = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n"
    r = await sandbox.execute(code, limits=Limits(wall_seconds=1.5, processes=16))
    assert r.killed_reason == "wall_time"
    after = await sandbox.execute("print('fine')")
    assert after.ok and after.stdout == "fine\n"


async def test_pandas_analysis(sandbox: NamespaceSandbox) -> None:
    require(
        importlib.util.find_spec("pandas") is not None, "pandas is not installed (sandbox extra)"
    )
    code = (
        "import pandas as pd\n"
        "df = pd.read_csv('refunds.csv')\n"
        "summary = df.groupby('reason')['amount'].agg(['count', 'sum']).reset_index()\n"
        "summary.to_csv('summary.csv', index=False)\n"
        "print(round(df['amount'].sum(), 2))\n"
    )
    csv = b"order,reason,amount\n1,damaged,10.5\n2,late,4.5\n3,damaged,5\n"
    r = await sandbox.execute(
        code,
        files={"refunds.csv": csv},
        outputs=["summary.csv"],
        limits=Limits(wall_seconds=30, cpu_seconds=30),
    )
    assert r.ok, r
    assert r.stdout == "20.0\n"
    assert r.files["summary.csv"].decode().splitlines() == [
        "reason,count,sum",
        "damaged,2,15.5",
        "late,1,4.5",
    ]


@pytest.mark.parametrize("pattern", ["/etc/*", "../*", "a/../../*", ""])
async def test_output_patterns_must_stay_in_the_workdir(
    sandbox: NamespaceSandbox, pattern: str
) -> None:
    with pytest.raises(UserError):
        await sandbox.execute("print(1)", outputs=[pattern])


async def test_outputs_through_a_symlinked_directory_are_refused(sandbox: NamespaceSandbox) -> None:
    code = "import os\nos.symlink('/usr/lib', 'lib')\n"
    r = await sandbox.execute(code, outputs=["lib/*.so*"])
    assert r.files == {}


async def test_inputs_larger_than_the_workdir_are_refused(sandbox: NamespaceSandbox) -> None:
    with pytest.raises(UserError):
        await sandbox.execute(
            "print(1)", files={"big.bin": b"x" * (2 * 2**20)}, limits=Limits(disk_bytes=2**20)
        )
    with pytest.raises(UserError):  # fits in bytes, not in inodes
        await sandbox.execute(
            "print(1)", files={f"f{i}": b"" for i in range(40)}, limits=Limits(max_files=16)
        )
    after = await sandbox.execute("print('fine')")
    assert after.ok
