"""The output folder of a merge: refuse unsafe targets, write under temporary names, rename when complete.

Rules (docs/merging.md, "Safety rules"):

- OUT may not equal, contain or lie inside any input folder (symlinks resolved).
- A non-empty OUT is refused unless ``overwrite``; then only files that an earlier reprolab merge recorded in
  OUT's manifest (``.reprolab-merge.json``) are replaced or removed; any other file is left alone, and one that
  this merge would write, or a weights file a loader would pick up beside ours, makes the merge refuse.
- One merge at a time per OUT: an exclusive ``flock`` on ``OUT/.reprolab-merge.lock`` is taken before anything
  in OUT is touched and held until the commit or abort; a second merge into the same OUT is refused with one line.
- Every file is written as ``.reprolab-tmp-<name>`` in its final folder, fsynced, and renamed into place only
  when all files are complete (weights first, ``config.json`` last), so a SIGKILL at any moment leaves no
  incomplete file under a final name. Temporaries of a killed merge are removed by the next merge into OUT.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

MANIFEST = ".reprolab-merge.json"
LOCK = ".reprolab-merge.lock"
TMP_PREFIX = ".reprolab-tmp-"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".index.json")


def _folder_of(path: Path) -> Path:
    real = path.resolve()
    return real if real.is_dir() else real.parent


def check_separate(out_dir: Path, inputs: Iterable[tuple[str, Path]]) -> None:
    """Refuse an OUT that equals, contains or lies inside an input's folder (a file input's folder is its parent)."""
    out = Path(out_dir).resolve()
    for label, path in inputs:
        folder = _folder_of(Path(path))
        if out == folder:
            rel = "is"
        elif folder in out.parents:
            rel = "lies inside"
        elif out in folder.parents:
            rel = "contains"
        else:
            continue
        raise ValueError(f"output folder {out_dir} ({out}) {rel} the folder of the {label} {path} ({folder}); "
                         "write the merge to a separate folder")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safe_relative(name: object) -> bool:
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def _lock(folder: Path) -> int:
    """An exclusive ``flock`` on ``folder/LOCK`` (created if needed); raises ValueError if another merge holds it.

    Non-blocking: a second merge into the same OUT is refused at once rather than queued behind the first (the user
    most likely started it by mistake). The lock file is removed on release; since a waiting opener can then lock
    the unlinked file, the lock counts only when the path still names the locked file (else retried).
    """
    path = folder / LOCK
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"output folder {folder} is in use by another reprolab merge (it holds {LOCK}); "
                             "wait for it to finish or choose another folder") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder released and removed it between our open and our flock: take the new one
    raise ValueError(f"output folder {folder}: could not take {LOCK} (it keeps being replaced)")


def _unlock(folder: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(folder / LOCK)  # while still holding it, so nobody can lock the file about to vanish
    os.close(fd)


class OutputFolder:
    """One merge's output folder. Use :meth:`temp` for every file, then :meth:`commit` (or :meth:`abort`)."""

    def __init__(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.path = Path(out_dir)
        self.overwrite = overwrite
        self._temps: dict[str, Path] = {}  # final relative name -> temporary path
        self._previous: set[str] = set()
        real = self.path.resolve()
        for parent in [real, *real.parents]:
            if parent.exists():
                if not parent.is_dir():
                    raise ValueError(f"output {self.path}: {parent} is not a folder")
                break
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"output {self.path}: cannot create the folder ({exc.strerror or exc})") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise ValueError(f"output {self.path}: the folder is not writable")
        self._lock_fd: int | None = _lock(self.path)
        try:
            self._check_contents()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Release OUT's lock (after :meth:`commit` or :meth:`abort`, which call it); idempotent."""
        if self._lock_fd is not None:
            _unlock(self.path, self._lock_fd)
            self._lock_fd = None

    def _check_contents(self) -> None:
        overwrite = self.overwrite
        self._remove_stale_temporaries()
        entries = sorted(p.name for p in self.path.iterdir() if p.name != LOCK)
        if not entries:
            return
        if not overwrite:
            raise ValueError(f"output folder {self.path} is not empty (holds {entries[0]!r}"
                             f"{f' and {len(entries) - 1} more' if len(entries) > 1 else ''}); choose an empty folder, "
                             "or pass --overwrite to replace the files of an earlier reprolab merge there")
        self._previous = self._read_manifest()
        for f in self._files_on_disk():
            if f not in self._previous and f.endswith(_WEIGHT_SUFFIXES):
                raise ValueError(f"output folder {self.path} holds {f!r}, which no reprolab merge wrote there; "
                                 "refusing to merge beside it (a loader would read it with the new weights)")

    def _read_manifest(self) -> set[str]:
        m = self.path / MANIFEST
        if not m.is_file():
            raise ValueError(f"--overwrite: {self.path} holds files but no {MANIFEST}, so no reprolab merge wrote "
                             "them; refusing to replace them")
        try:
            files = json.loads(m.read_text(encoding="utf-8"))["files"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ValueError(f"{m}: unreadable merge manifest ({type(exc).__name__}); refusing to overwrite") from None
        if not isinstance(files, list) or not all(_safe_relative(f) and self._inside(f) for f in files):
            raise ValueError(f"{m}: the manifest must list relative file names inside the folder; refusing to overwrite")
        return set(files)

    def _inside(self, name: str) -> bool:
        """Whether file ``name``'s folder resolves inside OUT (not through a symlinked subfolder to elsewhere)."""
        real = self.path.resolve()
        parent = (self.path / name).parent.resolve()
        return parent == real or real in parent.parents

    def _files_on_disk(self) -> list[str]:
        out = []
        for root, dirs, files in os.walk(self.path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = Path(root).relative_to(self.path)
            out += [(rel / f).as_posix() for f in files if f not in (MANIFEST, LOCK)]
        return out

    def _remove_stale_temporaries(self) -> None:
        for root, dirs, files in os.walk(self.path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in files:
                if f.startswith(TMP_PREFIX):
                    Path(root, f).unlink(missing_ok=True)

    def temp(self, name: str) -> Path:
        """The temporary path for final file ``name`` (relative, '/'-separated); refuses a name it may not write."""
        if not _safe_relative(name):
            raise ValueError(f"output file name {name!r} is not a plain relative name")
        if not self._inside(name):
            raise ValueError(f"output folder {self.path}: {name!r} would be written through a symlink to "
                             f"{(self.path / name).parent.resolve()}, outside the folder; refused")
        final = self.path / name
        if (final.exists() or final.is_symlink()) and name not in self._previous:
            raise ValueError(f"output folder {self.path} already holds {name!r}, which no reprolab merge wrote; "
                             "refusing to overwrite it")
        if name in self._temps:
            raise ValueError(f"output file {name!r} written twice")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{TMP_PREFIX}{final.name}"
        self._temps[name] = tmp
        return tmp

    def commit(self, order: Sequence[str] = ()) -> list[Path]:
        """fsync every temporary, record the manifest, rename into place (``order`` last, in that order)."""
        for tmp in self._temps.values():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        names = sorted(self._temps, key=lambda n: (n in order, order.index(n) if n in order else 0, n))
        # The manifest lists old and new names before any rename, so a kill between renames leaves every file
        # under a final name recorded as reprolab's (replaceable by the next --overwrite).
        self._write_manifest(self._previous | set(names))
        for name in names:
            os.replace(self._temps[name], self.path / name)
        for stale in sorted(self._previous - set(names)):
            p = self.path / stale
            if p.is_file() or p.is_symlink():
                p.unlink()
        self._write_manifest(set(names))
        for folder in {(self.path / n).parent for n in names}:
            _fsync_dir(folder)
        self._temps.clear()
        self.release()
        return [self.path / n for n in names]

    def _write_manifest(self, files: set[str]) -> None:
        tmp = self.path / f"{TMP_PREFIX}{MANIFEST}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"written_by": "reprolab merge", "files": sorted(files)}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / MANIFEST)
        _fsync_dir(self.path)

    def abort(self) -> None:
        """Remove this merge's temporaries (files under final names are never touched)."""
        for tmp in self._temps.values():
            with contextlib.suppress(OSError):  # best effort while another error is being reported
                tmp.unlink(missing_ok=True)
        self._temps.clear()
        self.release()
