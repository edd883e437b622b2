"""The escape suite: each case prints ESCAPED when it gets what it should not.

Each case runs under plain ``python3`` (``control``: must print ESCAPED, proving the case can
detect the escape) and in the namespace sandbox with the pre-check OFF (must not print it, and
must be reported with the expected reason where there is one).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sandbox_helpers import require, run_unisolated

from bastion.sandbox import Limits, NamespaceSandbox

SECRET = "s3cr3t-bastion-test-value"


@dataclass(frozen=True)
class Env:
    tmp: Path
    port: int
    worker_pid: int
    secret_file: Path


@dataclass(frozen=True)
class Case:
    id: str
    code: str
    limits: Limits = field(default_factory=Limits)
    reason: str | None = None  # expected killed_reason in the sandbox
    needs_root: bool = False  # the control needs root on the host to show the escape
    host_escaped: Callable[[Env], bool] | None = None  # an escape visible only from the host
    outputs: tuple[str, ...] = ()
    says: str | None = None  # the sandbox's stdout+stderr must show this refusal


FAST = Limits(wall_seconds=1.0, cpu_seconds=1)

CASES: list[Case] = [
    Case(
        "connect_localhost",
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', {port}), timeout=3); print('ESCAPED')\n"
        "except OSError as e: print(type(e).__name__, e)\n",
        says="Errno 1] Operation not permitted",
    ),
    Case(
        "connect_metadata_service",
        # Reaching the network stack at all is the escape: the sandbox must refuse at once.
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('169.254.169.254', 80), timeout=0.5)\n"
        "    print('ESCAPED')\n"
        "except PermissionError as e: print('refused', e)\n"
        "except OSError as e: print('ESCAPED reached the network:', type(e).__name__)\n",
        says="Errno 1] Operation not permitted",
    ),
    Case(
        "udp_send",
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.sendto(b'x', ('127.0.0.1', 9)); print('ESCAPED')\n",
        says="Errno 1] Operation not permitted",
    ),
    Case(
        "ipv6_socket",
        "import socket\nsocket.socket(socket.AF_INET6, socket.SOCK_STREAM); print('ESCAPED')\n",
        says="Errno 1] Operation not permitted",
    ),
    Case(
        "raw_socket",
        "import socket\n"
        "socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print('ESCAPED')\n",
        needs_root=True,
        says="Errno 1] Operation not permitted",
    ),
    Case(
        "packet_socket",
        "import socket\n"
        "socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300); print('ESCAPED')\n",
        needs_root=True,
        says="Errno 1] Operation not permitted",
    ),
    Case(
        "netlink_socket",
        "import socket\nsocket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); print('ESCAPED')\n",
        says="Errno 1] Operation not permitted",
    ),
    Case(
        "raw_syscall_socket_via_ctypes",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.syscall(41, 2, 1, 0)  # socket(AF_INET, SOCK_STREAM, 0) on x86-64\n"
        "print('ESCAPED' if fd >= 0 else f'refused errno={{ctypes.get_errno()}}')\n",
        says="errno=1",
    ),
    Case(
        "read_etc_shadow",
        "try: print('ESCAPED', open('/etc/shadow').read()[:5])\n"
        "except OSError as e: print(type(e).__name__)\n",
        needs_root=True,
    ),
    Case(
        "read_host_user_file",
        "try: print('ESCAPED' if 'secret' in open('{secret_file}').read() else 'no')\n"
        "except OSError as e: print(type(e).__name__)\n",
    ),
    Case(
        "environment_secret",
        "import os\nprint('ESCAPED' if '{secret}' in repr(dict(os.environ)) else 'clean')\n",
    ),
    Case(
        "write_outside_workdir",
        "try: open('{tmp}/pwned', 'w').write('x'); print('wrote')\n"
        "except OSError as e: print(type(e).__name__)\n",
        host_escaped=lambda env: (env.tmp / "pwned").exists(),
    ),
    Case(
        "write_runtime_files",
        "import os\n"
        "try:\n"
        "    p = os.path.join(os.path.dirname(os.__file__), 'bastion_pwned.txt')\n"
        "    open(p, 'w').write('x'); os.unlink(p); print('ESCAPED')\n"
        "except OSError as e: print(type(e).__name__)\n",
        needs_root=True,
    ),
    Case(
        "symlink_escape_read",
        "import os\nos.symlink('/etc/passwd', 'link')\n"
        "try: print('ESCAPED' if 'root:' in open('link').read() else 'no')\n"
        "except OSError as e: print(type(e).__name__)\n",
    ),
    Case(
        "symlink_escape_returned_file",
        # The code plants a symlink where an output is expected; nothing outside may come back.
        "import os\nos.symlink('{secret_file}', 'result.txt')\n"
        "print('ESCAPED' if 'secret' in open('result.txt').read() else 'no')\n",
        outputs=("result.txt",),
    ),
    Case(
        "dotdot_escape",
        "try: print('ESCAPED' if 'secret' in open('../' * 12 + '{secret_file}').read() else 'no')\n"
        "except OSError as e: print(type(e).__name__)\n",
    ),
    Case(
        "see_worker_process",
        "import os\n"
        "try: os.kill({worker_pid}, 0); print('ESCAPED')\n"
        "except OSError as e: print(type(e).__name__)\n",
    ),
    Case(
        "list_processes",
        "import os\n"
        "try: pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "except OSError: pids = []\n"
        "print('ESCAPED' if len(pids) > 10 else f'saw {{len(pids)}}')\n",
    ),
    Case(
        "kill_parent",
        "import os, signal, time\nparent = os.getppid()\n"
        "try: os.kill(parent, signal.SIGKILL)\nexcept OSError as e: print(type(e).__name__)\n"
        "time.sleep(0.3)\n"
        "print('ESCAPED' if os.getppid() != parent else 'parent alive')\n",
    ),
    Case(
        "ptrace",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print('ESCAPED' if libc.ptrace(0, 0, 0, 0) == 0 else 'refused')  # PTRACE_TRACEME\n",
    ),
    Case(
        "mount",
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "os.makedirs('m', exist_ok=True)\n"
        "if libc.mount(b'tmpfs', b'm', b'tmpfs', 0, None) == 0:\n"
        "    libc.umount2(b'm', 2); print('ESCAPED')\n"
        "else: print('refused', ctypes.get_errno())\n",
        needs_root=True,
    ),
    Case(
        "unshare_user_namespace",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print('ESCAPED' if libc.unshare(0x10000000) == 0 else 'refused')\n",
    ),
    Case(
        "setuid_root",
        "import os\n"
        "try: os.setuid(0); print('ESCAPED' if os.getuid() == 0 else 'no')\n"
        "except OSError as e: print(type(e).__name__)\n",
        needs_root=True,
    ),
    Case(
        "keyctl_raw_syscall",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "r = libc.syscall(250, 0, -3, 1)  # keyctl(KEYCTL_GET_KEYRING_ID, session, create)\n"
        "print('ESCAPED' if r >= 0 else 'refused')\n",
    ),
    Case(
        "bpf_raw_syscall",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.syscall(321, 0, None, 0)  # bpf(BPF_MAP_CREATE, NULL, 0)\n"
        "e = ctypes.get_errno()\nprint('ESCAPED' if e != 1 else 'refused')  # EPERM = filtered\n",
    ),
    Case(
        "sysv_shared_memory",
        # Segments outlive their process and escape RLIMIT_AS: creating one is the escape.
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "shm = libc.shmget(0, 1 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600\n"
        "if shm >= 0:\n    libc.shmctl(shm, 0, None); print('ESCAPED')  # IPC_RMID\n"
        "else: print('refused', ctypes.get_errno())\n",
        says="refused 1",
    ),
    Case(
        "memfd_memory",
        "import os\n"
        "try: fd = os.memfd_create('x'); os.write(fd, b'x' * 4096); print('ESCAPED')\n"
        "except OSError as e: print(type(e).__name__)\n",
        says="PermissionError",
    ),
    Case(
        "execute_written_binary",
        "import os, sys\n"
        "open('py', 'wb').write(open(os.path.realpath(sys.executable), 'rb').read())\n"
        "os.chmod('py', 0o755)\n"
        "try: os.execv('./py', ['py', '-c', 'print(\"ESCAPED\")'])\n"
        "except OSError as e: print(type(e).__name__)\n",
        says="PermissionError",
    ),
    Case(
        "infinite_loop",
        "import time\nt = time.time()\nwhile time.time() - t < 3: pass\nprint('ESCAPED')\n",
        limits=Limits(wall_seconds=1.0, cpu_seconds=30),
        reason="wall_time",
    ),
    Case(
        "sleep_forever",
        "import time\ntime.sleep(3)\nprint('ESCAPED')\n",
        limits=Limits(wall_seconds=0.5),
        reason="wall_time",
    ),
    Case(
        "cpu_burn",
        "import time\nwhile time.process_time() < 2.5: pass\nprint('ESCAPED')\n",
        limits=Limits(wall_seconds=10.0, cpu_seconds=1),
        reason="cpu_time",
    ),
    Case(
        "many_processes",
        "import os, time\npids = []\n"
        "for _ in range(40):\n"
        "    pid = os.fork()\n"
        "    if pid == 0: time.sleep(2); os._exit(0)\n"
        "    pids.append(pid)\n"
        "print('ESCAPED')\n"
        "for p in pids: os.kill(p, 9)\n",
        limits=Limits(processes=8),
        reason="process_limit",
    ),
    Case(
        "allocate_memory",
        "b = bytearray(1 << 30)\nprint('ESCAPED')\n",
        limits=Limits(memory_bytes=128 * 2**20),
        reason="memory_limit",
    ),
    Case(
        "print_gigabytes",
        "import sys\nchunk = 'x' * 65536\nfor _ in range(320): sys.stdout.write(chunk)\n"
        "print('ESCAPED')\n",
        limits=Limits(max_output_bytes=64 * 1024),
        reason="output_limit",
    ),
    Case(
        "fill_disk",
        "with open('big', 'wb') as f:\n    for _ in range(48): f.write(b'\\0' * 2**20)\n"
        "print('ESCAPED')\n",
        limits=Limits(disk_bytes=16 * 2**20),
        reason="disk_limit",
    ),
    Case(
        "huge_single_file",
        "with open('big', 'wb') as f:\n    for _ in range(24): f.write(b'\\0' * 2**20)\n"
        "print('ESCAPED')\n",
        limits=Limits(max_file_bytes=4 * 2**20),
        reason="file_size_limit",
    ),
    Case(
        "too_many_files",
        "import os\nos.makedirs('d', exist_ok=True)\n"
        "for i in range(3000): open(f'd/{{i}}', 'w').close()\nprint('ESCAPED')\n",
        limits=Limits(max_files=256),
        reason="disk_limit",
    ),
]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setenv("BASTION_TEST_SECRET", SECRET)
    secret_file = tmp_path / "host_secret.txt"
    secret_file.write_text("secret data of the host user\n")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    work = tmp_path / "work"
    work.mkdir()
    yield Env(
        tmp=tmp_path,
        port=listener.getsockname()[1],
        worker_pid=os.getpid(),
        secret_file=secret_file,
    )
    stop.set()
    thread.join()
    listener.close()


def _code(case: Case, env: Env) -> str:
    return case.code.format(
        port=env.port,
        worker_pid=env.worker_pid,
        secret_file=env.secret_file,
        tmp=env.tmp,
        secret=SECRET,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_control_shows_the_escape(case: Case, env: Env) -> None:
    """Plain python3 escapes: the case is able to detect what it tests."""
    if case.needs_root:
        require(os.geteuid() == 0, "this control shows its escape only as root (CI runs as root)")
    result = run_unisolated(_code(case, env), env.tmp / "work", timeout=30)
    escaped = "ESCAPED" in result.stdout or (
        case.host_escaped is not None and case.host_escaped(env)
    )
    assert escaped, f"control did not escape: {result}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_sandbox_contains_the_escape(
    case: Case, env: Env, any_sandbox: NamespaceSandbox
) -> None:
    """Both launchers (zygote fork, fresh interpreter) contain every case."""
    sandbox = any_sandbox
    result = await sandbox.execute(_code(case, env), limits=case.limits, outputs=case.outputs)
    assert "ESCAPED" not in result.stdout, result
    if case.says is not None:
        assert case.says in result.stdout + result.stderr, result
    if case.host_escaped is not None:
        assert not case.host_escaped(env)
    if case.reason is not None:
        assert result.killed_reason == case.reason, result
    for data in result.files.values():
        assert b"secret" not in data and b"root:" not in data
    # The worker and the next execution are unaffected.
    follow = await sandbox.execute("print(6 * 7)")
    assert follow.ok and follow.stdout == "42\n", follow
