"""The lock of a run directory: ``RUN/.lock``, ``flock``-ed by the one process that writes the
run, holding its pid (for the error a second writer gets), and deleted when it lets go.

Deleting a lock file is safe only with a check on the other side: a writer that opened
``.lock`` just before its holder deleted it would lock a file that no longer has a name, while
a third writer makes and locks a new one. So after locking, :func:`lock` checks that the file
it holds is still the one at ``RUN/.lock`` (same device and inode) and starts over if not.
"""

import fcntl
import os
from pathlib import Path

from pyro_vae.errors import TrainingError
from pyro_vae.run.checkpoint import storage_error
from pyro_vae.run.layout import LOCK_FILE


def lock(path: Path) -> int:
    """Open and ``flock`` ``path/.lock`` (made if missing), retrying while the file locked
    is one that its previous holder unlinked meanwhile; refuse a directory in use."""
    while True:
        try:
            fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise storage_error(path / LOCK_FILE, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise TrainingError(
                f"run directory '{path}' is in use by another pyro-vae process (pid "
                f"{owner}); wait for it to finish, or choose another --out"
            ) from None
        if _still_linked(fd, path / LOCK_FILE):
            return fd
        os.close(fd)


def _still_linked(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``path`` (not unlinked or
    replaced since it was opened)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def unlock(path: Path, fd: int) -> None:
    """Delete ``path/.lock`` while still holding it, then drop the ``flock`` (close ``fd``).
    A read-only or vanished directory keeps its file, which is harmless: the lock is the
    ``flock``, not the file."""
    try:
        os.unlink(path / LOCK_FILE)
    except OSError:
        pass
    os.close(fd)
