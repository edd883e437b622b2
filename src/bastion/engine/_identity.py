"""Who a worker is: its id, and whether the worker behind an id is still alive on this host.

Owns: the worker id's format, ``host:boot:pid:start:random``, where ``boot`` is a short hash of
this boot's id and ``start`` the process's start time in clock ticks. Together they name one
process of one boot of one host, so a worker starting on the same host can tell that the worker
holding a lease is gone (its pid no longer exists, or belongs to a process started at another
time, or the host rebooted) and reclaim its runs at once instead of waiting out the lease.
Workers that share a hostname must share a PID namespace for this to hold (one host, or
containers with their own hostnames); ``worker.reclaim_local: false`` turns it off.
"""

from __future__ import annotations

import hashlib
import os
import socket
from functools import cache
from pathlib import Path


@cache
def _boot_tag() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "noboot"
    return hashlib.sha256(boot.encode()).hexdigest()[:8]


def _host() -> str:
    # ":" separates the id's fields; a host name never has one, but be sure.
    return socket.gethostname().replace(":", "_")[:60]


def _start_ticks(pid: int) -> str | None:
    """The process's start time (clock ticks after boot), or None if there is no such process
    or this system has no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19]  # field 22 of the whole line


def local_prefix() -> str:
    """The start of the ids of every worker of this host and boot."""
    return f"{_host()}:{_boot_tag()}:"


def default_worker_id() -> str:
    pid = os.getpid()
    return f"{local_prefix()}{pid}:{_start_ticks(pid) or 0}:{os.urandom(3).hex()}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` is a worker id of this host and boot whose process is gone.
    Anything else (another host, an id in another format, a live process) is not known dead."""
    prefix = local_prefix()
    if not owner.startswith(prefix):
        return False
    parts = owner[len(prefix) :].split(":")
    if len(parts) != 3 or not parts[0].isdigit():
        return False
    pid, ticks = int(parts[0]), parts[1]
    if pid == os.getpid():
        return False  # this process: an earlier Worker object here, not a dead one
    current = _start_ticks(pid)
    if current is not None:
        return current != ticks  # the pid was reused by a process started later
    if Path("/proc/self/stat").exists():
        return True  # /proc works here and has no such process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, owned by someone else
    return False
