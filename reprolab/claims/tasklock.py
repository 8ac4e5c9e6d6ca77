"""One run per task across processes that share a cache: pytest-xdist workers, two ``reprolab check`` at once.

Claims of one file often read one run (same experiment, config and seed). Under ``pytest -n 2`` two claims of
that file can be checked at the same moment in two processes; without coordination both would compute the run.
A process that is about to compute a task takes an exclusive ``flock`` on ``<cache>/.locks/<key>.lock``
(non-blocking), as it starts the task, not for all its tasks up front, so two processes that reach one
multi-seed run together split its seeds. A task whose lock another process holds is *deferred*: after its own tasks, the process waits
for that lock, which the other releases once the result is in the cache, and reads the result from there (or
computes it itself when the other process failed or died: the kernel releases a dead holder's lock).

A waiting process holds no lock, so two processes never wait on each other. Lock files are left in place
(removing a lock file that another process may be opening would let two processes hold "the" lock). Without
``fcntl`` (Windows) or with the cache disabled, nothing is locked and every process computes its own misses.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


class TaskLocks:
    """Exclusive per-key locks under ``root`` (the cache's folder); ``enabled=False`` locks nothing."""

    def __init__(self, root: Path | str, *, enabled: bool = True) -> None:
        self.dir = Path(root) / ".locks"
        self.enabled = enabled and fcntl is not None
        self._held: dict[str, IO[bytes]] = {}

    def _open(self, key: str) -> IO[bytes] | None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            return open(self.dir / f"{key}.lock", "ab")
        except OSError:  # a read-only cache: no coordination, never a failed run
            return None

    def try_acquire(self, key: str) -> bool:
        """Take the key's lock if nobody holds it. True also when locking is off (the caller computes)."""
        if not self.enabled or key in self._held:
            return True
        handle = self._open(key)
        if handle is None:
            return True
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._held[key] = handle
        return True

    def wait(self, key: str) -> None:
        """Block until whoever holds the key's lock releases it (their result is then in the cache)."""
        if not self.enabled:
            return
        handle = self._open(key)
        if handle is None:
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        finally:
            handle.close()  # closing releases: this process only wanted to know the other one is done

    def release(self, key: str) -> None:
        handle = self._held.pop(key, None)
        if handle is not None:
            handle.close()

    def release_all(self) -> None:
        for key in list(self._held):
            self.release(key)

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)
