"""One job per workdir: checked writable, locked, and swept of its own partial files only.

Every job (sampling, mining, training) validates its inputs first and then `claim`s its
workdir, so a failed start leaves nothing behind and a second job on the same folder is
refused with a message naming the holder. The lock is an `flock` on `<workdir>/.ltg.lock`:
the kernel releases it when the holder exits or is killed, so a crash never leaves a stale
lock. On several processes, process 0 holds it for the job.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from ltg_jax import io

LOCK_FILE = ".ltg.lock"


def os_error_message(error: OSError, flag: str = "--workdir") -> str:
    """One line for an OSError met while writing: the file, what it means, and the fix."""
    where = error.filename or "a file"
    if error.errno == errno.ENOSPC:
        return (
            f"no space left on the device while writing {where}; free space (or pass another "
            f"{flag}) and rerun the same command: it resumes where it stopped"
        )
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {where} ({error.strerror}); pass a writable {flag}"
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{where}: a file is in the way of a folder ({error.strerror}); pass another {flag}"
    return f"{where}: {error.strerror or error}"


def check_writable(workdir: str | os.PathLike, flag: str = "--workdir") -> Path:
    """Creates `workdir` if needed and proves a file can be written there; else one clear error."""
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag}={path} is a file, not a folder; pass a folder (made if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path) as probe:
            probe.write(b"ltg")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as e:
        raise ValueError(f"{flag}={path}: {os_error_message(e, flag)}") from None
    return path


def remove_partial_files(root: str | os.PathLike) -> int:
    """Deletes the temp files of our atomic writes that a killed job left under `root`.

    Only our own pattern (io.PARTIAL_SUFFIX), and not inside a nested folder that is another
    job's workdir (it has its own lock file): that job sweeps its own. Returns how many.
    """
    root, removed = Path(root), 0
    for folder, subdirs, files in os.walk(root):
        if Path(folder) != root and LOCK_FILE in files:
            subdirs[:] = []
            continue
        for name in files:
            if name.startswith(".") and name.endswith(io.PARTIAL_SUFFIX):
                (Path(folder) / name).unlink(missing_ok=True)
                removed += 1
    return removed


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        return f"pid {info['pid']} on {info['host']} since {info['since']} (`{info['command']}`)"
    except (OSError, ValueError, KeyError):
        return "another process"


def _take_lock(workdir: Path, flag: str):
    """The open, locked lock file, or a ValueError naming the job that holds it."""
    lock = workdir / LOCK_FILE
    handle = lock.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ValueError(
            f"{flag}={workdir} is in use by {_holder(lock)}; wait for that job to finish, stop "
            f"it, or pass another {flag}"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)[:300],
            }
        )
    )
    handle.flush()
    return handle


def _all_agree(ok: bool) -> bool:
    """Process 0's `ok`, on every process (the lock is taken by process 0 only)."""
    if jax.process_count() == 1:
        return ok
    return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


@contextlib.contextmanager
def claim(workdir: str | os.PathLike, flag: str = "--workdir") -> Iterator[Path]:
    """Exclusive use of `workdir` for the enclosed job; call it after validating the inputs.

    Checks the folder can be written, takes the lock (refusing a second job), then removes
    partial files a killed job of ours left there. Released on exit, normal or not.
    """
    path = Path(workdir)
    handle, error = None, None
    if jax.process_index() == 0:
        try:
            check_writable(path, flag)
            handle = _take_lock(path, flag)
            remove_partial_files(path)
        except ValueError as e:
            error = e
    if not _all_agree(error is None):
        raise error or ValueError(f"{flag}={path}: process 0 could not claim it (see its error)")
    try:
        yield path
    finally:
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
