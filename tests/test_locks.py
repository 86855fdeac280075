"""One writer per directory (ticlip.locking.DirLock): a second writer fails at once naming the holder,
stale locks (dead pid on this host, old heartbeat from another host) are reclaimed by exactly one
process, and the lock is gone after a normal exit and after an exception."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from ticlip.locking import LOCK_NAME, DirLock, LockHeld, read_lock

HOLD = textwrap.dedent("""
    import sys, time
    from ticlip.locking import DirLock
    with DirLock(sys.argv[1], what="run"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _holder(directory, seconds=60.0):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path):
    proc = _holder(tmp_path / "run")
    try:
        t0 = time.time()
        with pytest.raises(LockHeld) as e:
            DirLock(tmp_path / "run", what="run").acquire()
        assert time.time() - t0 < 2
        msg = str(e.value)
        assert "\n" not in msg
        assert f"pid {proc.pid}" in msg and f"host {socket.gethostname()}" in msg and "since 20" in msg
        assert "delete" in msg and LOCK_NAME in msg
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_from_a_dead_process_on_this_host_is_reclaimed(tmp_path):
    proc = _holder(tmp_path, 60)
    proc.kill()  # SIGKILL: no clean-up ran, the lock file stays
    proc.wait()
    assert read_lock(str(tmp_path))["pid"] == proc.pid
    with DirLock(tmp_path) as lock:
        assert read_lock(str(tmp_path))["pid"] == os.getpid()
        assert read_lock(str(tmp_path))["token"] == lock.token
    assert not (tmp_path / LOCK_NAME).exists()


def _foreign_lock(directory, age_s: float):
    path = os.path.join(directory, LOCK_NAME)
    with open(path, "w") as f:
        json.dump({"host": "some-other-node", "pid": os.getpid(), "started": time.time() - age_s,
                   "command": "ticlip train", "token": "x"}, f)
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def test_another_hosts_lock_is_stale_only_after_its_heartbeat_stops(tmp_path):
    _foreign_lock(tmp_path, age_s=5)  # its heartbeat is recent: the holder is alive as far as we know
    with pytest.raises(LockHeld, match="host some-other-node"):
        DirLock(tmp_path, stale_s=60).acquire()
    _foreign_lock(tmp_path, age_s=120)
    with DirLock(tmp_path, stale_s=60):
        assert read_lock(str(tmp_path))["host"] == socket.gethostname()


def test_the_heartbeat_refreshes_the_lock_files_mtime(tmp_path):
    with DirLock(tmp_path, heartbeat_s=0.05):
        first = read_lock(str(tmp_path))["mtime"]
        os.utime(tmp_path / LOCK_NAME, (first - 100, first - 100))
        time.sleep(0.5)
        assert read_lock(str(tmp_path))["mtime"] > first - 50


def test_the_lock_is_released_after_a_normal_exit_and_after_an_exception(tmp_path):
    with DirLock(tmp_path / "a"):
        assert (tmp_path / "a" / LOCK_NAME).exists()
    assert not (tmp_path / "a").exists()  # made for the lock and still empty: removed again
    with pytest.raises(ZeroDivisionError):
        with DirLock(tmp_path / "b"):
            (tmp_path / "b" / "partial.txt").write_text("x")
            1 / 0
    assert not (tmp_path / "b" / LOCK_NAME).exists() and (tmp_path / "b" / "partial.txt").exists()
    with DirLock(tmp_path / "b"):  # and it can be taken again
        pass


def test_a_process_that_exits_normally_leaves_no_lock(tmp_path):
    proc = _holder(tmp_path / "run", 0)
    assert proc.wait(30) == 0
    assert not (tmp_path / "run").exists()


RACE = textwrap.dedent("""
    import sys, time
    from ticlip.locking import DirLock, LockHeld
    start = float(sys.argv[2])
    time.sleep(max(0.0, start - time.time()))
    try:
        with DirLock(sys.argv[1]):
            time.sleep(3)
        print("won")
    except LockHeld:
        print("refused")
""")


@pytest.mark.slow
def test_processes_racing_for_a_stale_lock_let_exactly_one_win(tmp_path):
    dead = _holder(tmp_path, 60)
    dead.kill()
    dead.wait()
    start = time.time() + 3  # all of them past their imports, then at once
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), str(start)], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outcomes == ["refused", "refused", "refused", "won"]
    assert not (tmp_path / LOCK_NAME).exists()
