"""fakeiot's data directory (``--data-dir``): made if missing, checked, and locked while in use.

Two fakeiots on one data directory would share its SQLite file and its
generated passwords while each believes it owns them, so :class:`DataDirLock`
holds an exclusive ``flock`` on ``<data-dir>/fakeiot.lock`` (with the
holder's pid written inside) from start to stop.  A second fakeiot, in
another process or in the same one (a lock belongs to an open file, not to a
process), fails at once with :class:`~fakeiot.errors.DataDirLocked` naming the
holder's pid.  The kernel releases the lock when its holder exits, however it
exits, so a stale lock file never blocks anyone.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .errors import DataDirError, DataDirLocked

LOCK_FILE = "fakeiot.lock"


def prepare_data_dir(path: Path) -> None:
    """Make ``path`` (and its parents) if missing; raise :class:`DataDirError` saying what is wrong."""
    if path.exists() and not path.is_dir():
        raise DataDirError(
            f"data directory {path} is not a directory (a file is in the way): "
            "remove it or choose another --data-dir"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        where = f"{blocker} is a file" if blocker is not None else "a file is in the way"
        raise DataDirError(f"cannot create data directory {path}: {where}") from None
    except OSError as exc:
        raise DataDirError(f"cannot create data directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataDirError(f"data directory {path} is not writable")


class DataDirLock:
    """An exclusive lock on a data directory, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DataDirLocked` (held elsewhere) or :class:`DataDirError`."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DataDirError(
                f"cannot use data directory {self.path.parent}: {self.path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise DataDirError(
                    f"cannot lock data directory {self.path.parent}: {exc.strerror}"
                ) from None
            who = f"pid {holder}" if holder is not None else "another process"
            raise DataDirLocked(
                f"data directory {self.path.parent} is in use by another fakeiot ({who}); "
                "stop it or choose another --data-dir",
                holder,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (idempotent); the file stays, empty."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing the last descriptor releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
