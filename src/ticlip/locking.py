"""One writer per directory: an exclusive lock file that works on local disks and on shared storage.

    with DirLock("runs/exp/run1"):       # ticlip train, ticlip eval RUN, ticlip run, ticlip data build
        ...                              # a second writer gets LockHeld: one line naming the holder

How it works. The lock is the file ``<dir>/.ticlip.lock``, created with ``O_CREAT | O_EXCL``: exactly one
process can create it. It holds JSON: host, pid, the pid's start time, when the lock was taken, the
command line, and a random token. A daemon thread touches the file every ``heartbeat_s`` seconds (its
mtime is the heartbeat). The lock is removed when the ``with`` block ends, also through an exception.

A process killed with SIGKILL (or a crashed machine) leaves the file behind. A later writer decides
whether it is stale:

- on the same host, the holder is gone when its pid does not exist, or exists but started at another
  time (the pid was reused); a live holder is never taken over, however old its heartbeat;
- on another host pids mean nothing, so the lock is stale only when its heartbeat is older than
  ``stale_s`` (default 10 minutes; a live holder refreshes it every 30 s).

A stale lock is reclaimed under a second lock file, ``.ticlip.lock.reclaim`` (also ``O_EXCL``): its
holder re-reads the lock, checks it is still the same stale one (same token), removes it and creates
its own. Two writers that find the same stale lock cannot both reclaim it, and a reclaimer cannot
remove a fresh lock that another process created in between. A reclaim file left by a crash in the
milliseconds of a reclaim is itself removed once it is older than ``stale_s``.

Why this and not ``fcntl``/``flock``: POSIX record locks on NFS depend on the lock daemon (lockd/NLM)
and are silently local-only on some clients and FUSE file systems, and flock is not shared across NFS
clients on older kernels; a lock that only excludes processes on one machine is worse than none on a
cluster. Exclusive create is atomic on local file systems and on NFSv3 and later (the server checks
the name; NFSv2 and some FUSE stores do not promise it). The heartbeat is compared with the file's
mtime as set by the storage, on the reader's side only relative to ``stale_s``, so clocks of
different hosts must agree to within minutes, not seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time

from ticlip.errors import TiclipError

LOCK_NAME = ".ticlip.lock"
RECLAIM_NAME = LOCK_NAME + ".reclaim"
HEARTBEAT_S = 30.0
STALE_S = 600.0

__all__ = ["HEARTBEAT_S", "LOCK_NAME", "STALE_S", "DirLock", "LockHeld", "read_lock"]


class LockHeld(TiclipError):
    """Another live process holds the directory's lock."""


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def read_lock(directory: str) -> dict | None:
    """The lock record of ``directory`` (with ``mtime``), or None when it has no lock."""
    return _read(os.path.join(directory, LOCK_NAME))


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return {"mtime": time.time()}
    try:
        record = json.loads(text)
    except ValueError:  # being written right now (or garbage): judged by its age only
        record = {}
    if not isinstance(record, dict):
        record = {}
    record["mtime"] = mtime
    return record


def _when(ts) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(ts)))
    except (TypeError, ValueError):
        return "an unknown time"


class DirLock:
    """An exclusive lock on ``directory`` (see the module docstring). Use as a context manager.

    ``create``: make the directory when it is missing; it is removed again on release if it is then
    empty (a refused or failed command leaves nothing behind). ``what`` names the directory in the
    error (``run``, ``experiment``, ``stream``)."""

    def __init__(self, directory: str | os.PathLike, *, what: str = "directory", create: bool = True,
                 heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S):
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, LOCK_NAME)
        self.what = what
        self.create = create
        self.heartbeat_s = heartbeat_s
        self.stale_s = stale_s
        self.token = secrets.token_hex(16)
        self._created_dirs: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    # ------------------------------------------------------------------ acquire / release
    def acquire(self) -> "DirLock":
        if self.held:
            return self
        if not os.path.isdir(self.directory):
            if not self.create:
                raise TiclipError(f"no directory {self.directory} to lock")
            path = os.path.abspath(self.directory)
            while path and not os.path.isdir(path):  # the directories made here, leaf first
                self._created_dirs.append(path)
                path = os.path.dirname(path)
            os.makedirs(self.directory, exist_ok=True)
        try:
            for _ in range(3):
                if self._try_create():
                    break
                holder = _read(self.path)
                if holder is None:
                    continue  # released between our attempt and the read
                if not self._stale(holder):
                    raise LockHeld(self._held_message(holder))
                self._reclaim(holder)
            else:
                holder = _read(self.path) or {}
                raise LockHeld(self._held_message(holder))
        except BaseException:
            self._remove_created_dir()
            raise
        self.held = True
        self._thread = threading.Thread(target=self._heartbeat, name=f"ticlip-lock-{self.what}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        record = _read(self.path)
        if record is not None and record.get("token") == self.token:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self._remove_created_dir()

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------ internals
    def _record(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
                "started": time.time(), "command": " ".join([os.path.basename(sys.argv[0] or "python"),
                                                              *sys.argv[1:]])[:500],
                "token": self.token}

    def _try_create(self, path: str | None = None, record: dict | None = None) -> bool:
        path = path or self.path
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record or self._record(), f)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        return True

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            pid = holder["pid"]
            if not _pid_alive(pid):
                return True
            start = _process_start(pid)
            return bool(holder.get("pid_start") and start and start != holder["pid_start"])
        return time.time() - holder["mtime"] > self.stale_s

    def _reclaim(self, holder: dict) -> None:
        """Remove the stale lock ``holder`` if it is still the one in place (under the reclaim lock)."""
        guard = os.path.join(self.directory, RECLAIM_NAME)
        if not self._try_create(guard, {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token}):
            old = _read(guard)
            if old is not None and time.time() - old["mtime"] > self.stale_s:
                try:
                    os.remove(guard)  # left by a crash in the middle of a reclaim
                except FileNotFoundError:
                    pass
            return  # someone else is reclaiming: try again (and most likely find their lock)
        try:
            now = _read(self.path)
            if now is not None and now.get("token") == holder.get("token") and self._stale(now):
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
        finally:
            try:
                os.remove(guard)
            except FileNotFoundError:
                pass

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except OSError:
                pass  # gone (or storage away for a moment): the next beat tries again

    def _remove_created_dir(self) -> None:
        for path in self._created_dirs:
            try:
                os.rmdir(path)  # only when empty
            except OSError:
                break
        self._created_dirs = []

    def _held_message(self, holder: dict) -> str:
        who = (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since "
               f"{_when(holder.get('started'))}")
        command = holder.get("command")
        return (f"{self.what} {self.directory} is in use by another ticlip process ({who}"
                f"{': ' + command if command else ''}); wait for it to finish, or if that process is gone "
                f"for good (e.g. its machine crashed), delete {self.path}")
