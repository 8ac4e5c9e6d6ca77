"""Streaming checkpoint I/O: safetensors files and Hugging Face model folders (sharded too).

Why not ``safetensors.safe_open``: it memory-maps whole files, and the mapped pages a merge touches stay in the
process's resident set, so peak RSS would grow to the size of every input. Reading each tensor with plain
``readinto`` into a buffer we own keeps peak memory at the tensors actually alive. The format is simple
(8-byte little-endian header length, a JSON header, raw little-endian bytes), so reader and writer are short.

Pickled checkpoints (``pytorch_model.bin``, ``*.pt``) are refused unless the caller opts into
``torch.load(weights_only=True)``; arbitrary pickles are never executed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from reprolab.mergers.weights.output import OutputFolder

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_CODES = {v: k for k, v in _DTYPES.items()}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_MAX_HEADER = 100 * 1024 * 1024


def dtype_from_name(name: str) -> torch.dtype:
    """Map a user-facing dtype name (``float16``, ``bf16``, ``fp32``...) to a torch dtype; a ``torch.`` prefix
    (``torch.bfloat16``, as mergekit accepts it) is allowed."""
    aliases = {
        "float32": torch.float32, "fp32": torch.float32, "f32": torch.float32,
        "float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "f16": torch.float16,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
        "float64": torch.float64, "fp64": torch.float64,
    }
    try:
        return aliases[str(name).lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(aliases)}") from None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    file: Path
    start: int  # absolute byte offset in ``file``
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


# dtypes the safetensors format defines that reprolab cannot merge (refused with a clear error, never misread)
_UNSUPPORTED = {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "U16", "U32", "U64", "C64"}


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice")
        out[k] = v
    return out


def _ints(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value)


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate one safetensors header, at least as strictly as the safetensors library does.

    A mapping of mappings; known dtypes; shapes of non-negative ints; byte ranges non-negative, ordered,
    non-overlapping, contiguous from 0 to the end of the file and each equal to dtype size x number of
    elements. Every error is one line naming the file (and the tensor).
    """
    path = Path(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER:  # the safetensors library's own limit (100 MB)
                raise ValueError(f"{path}: not a safetensors file (header length {n} exceeds {_MAX_HEADER} bytes)")
            if 8 + n > size:
                raise ValueError(f"{path}: not a safetensors file (header length {n} does not fit the file of {size} bytes)")
            header_bytes = f.read(n)
    except FileNotFoundError:
        raise ValueError(f"checkpoint file {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deeply
        raise ValueError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (a {type(header).__name__}, not a mapping)")
    data_start = 8 + n
    ranges: list[tuple[int, int, str]] = []
    out: dict[str, TensorInfo] = {}
    for name, meta in header.items():
        where = f"{path}: tensor {name!r}"
        if name == "__metadata__":
            if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
                raise ValueError(f"{path}: __metadata__ must be a mapping of strings to strings")
            continue
        if not isinstance(meta, dict):
            raise ValueError(f"{where}: header entry is a {type(meta).__name__}, not a mapping")
        extra = sorted(set(meta) - {"dtype", "shape", "data_offsets"})
        missing = sorted({"dtype", "shape", "data_offsets"} - set(meta))
        if missing or extra:
            raise ValueError(f"{where}: header entry has {'missing field(s) ' + str(missing) if missing else ''}"
                             f"{' and ' if missing and extra else ''}{'unknown field(s) ' + str(extra) if extra else ''}")
        code = meta["dtype"]
        if isinstance(code, str) and code in _UNSUPPORTED:
            raise ValueError(f"{where}: dtype {code} is valid safetensors but cannot be merged here")
        if not isinstance(code, str) or code not in _DTYPES:
            raise ValueError(f"{where}: unknown dtype {code!r}")
        if not _ints(meta["shape"]):
            raise ValueError(f"{where}: shape must be a list of non-negative integers, got {meta['shape']!r}")
        offsets = meta["data_offsets"]
        if not _ints(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
            raise ValueError(f"{where}: data_offsets must be two ordered non-negative integers, got {offsets!r}")
        shape = tuple(meta["shape"])
        begin, end = offsets
        dtype = _DTYPES[code]
        esize = torch.empty((), dtype=dtype).element_size()
        # a dimension past 2^64 (or dimensions multiplying past it) is refused by the safetensors library; torch
        # cannot even describe a tensor whose strides pass 2^63, and a zero dimension elsewhere hides both from
        # the byte count below
        if math.prod(d for d in shape if d) * esize >= 2**63:
            raise ValueError(f"{where}: shape {list(shape)} is too large (its non-zero dimensions multiply past "
                             "2^63 bytes)")
        expected = math.prod(shape) * esize
        if end - begin != expected:
            raise ValueError(f"{where}: byte range [{begin}, {end}) holds {end - begin} bytes, "
                             f"shape {list(shape)} {code} needs {expected}")
        ranges.append((begin, end, name))
        out[name] = TensorInfo(name, dtype, shape, path, data_start + begin, end - begin)
    pos = 0
    for begin, end, name in sorted(ranges):
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else f"leaves a gap after byte {pos}"
            raise ValueError(f"{path}: tensor {name!r}: byte range [{begin}, {end}) {what}")
        pos = end
    if data_start + pos != size:
        raise ValueError(f"{path}: tensor data ends at byte {data_start + pos} but the file has {size} bytes "
                         "(truncated or trailing data)")
    return out


def read_tensor(info: TensorInfo, out: torch.Tensor | None = None) -> torch.Tensor:
    """Read one tensor from disk into a fresh buffer (or into ``out``, which must match exactly)."""
    if out is None:
        out = torch.empty(info.shape, dtype=info.dtype)
    elif out.dtype != info.dtype or tuple(out.shape) != info.shape or not out.is_contiguous():
        raise ValueError(f"buffer for {info.name!r} does not match {info.dtype} {info.shape}")
    if info.nbytes == 0:
        return out
    view = out.view(-1).view(torch.uint8) if out.dim() else out.reshape(1).view(torch.uint8)
    with open(info.file, "rb") as f:
        f.seek(info.start)
        got = f.readinto(memoryview(view.numpy()))
    if got != info.nbytes:
        raise ValueError(f"{info.file}: tensor {info.name!r} truncated ({got} of {info.nbytes} bytes)")
    return out


def _check_f32(info: TensorInfo, *bufs: torch.Tensor) -> None:
    if info.dtype != torch.float32 or any(t.dtype != torch.float32 for t in bufs):
        raise ValueError(f"needs float32 tensors, got {info.dtype} for {info.name!r}")


_READ_CHUNK = 1 << 18  # float32 entries per read in subtract_into (1 MiB: the chunk is subtracted while in cache)


def subtract_into(
    info: TensorInfo, base: torch.Tensor, out: torch.Tensor, lo: int = 0, hi: int | None = None
) -> torch.Tensor:
    """``out = tensor - base`` for a float32 tensor on disk, read chunk by chunk into ``out`` and subtracted there.

    Each chunk is subtracted while it is still in cache, so the read costs no extra pass over main memory. Plain
    ``pread`` rather than a mapping: mapping and unmapping windows takes the process's memory-map lock and flushes
    the TLB of every thread, which serialises a merge running on several threads. With ``lo``/``hi`` only the
    flat entries ``[lo, hi)`` are read, and ``base``/``out`` hold just those (a row block of a large tensor).
    """
    hi = info.numel if hi is None else hi
    _check_f32(info, base, out)
    if out.numel() != hi - lo or base.numel() != hi - lo or not out.is_contiguous() or not 0 <= lo <= hi <= info.numel:
        raise ValueError(f"buffer for {info.name!r} does not match entries [{lo}, {hi}) of {info.shape}")
    if hi == lo:
        return out
    b = base.contiguous().reshape(-1).numpy()
    o = out.reshape(-1).numpy()
    fd = os.open(info.file, os.O_RDONLY)
    try:
        for a in range(0, hi - lo, _READ_CHUNK):
            z = min(hi - lo, a + _READ_CHUNK)
            chunk = o[a:z]
            if os.preadv(fd, [memoryview(chunk.view(np.uint8))], info.start + 4 * (lo + a)) != 4 * (z - a):
                raise ValueError(f"{info.file}: tensor {info.name!r} truncated")
            np.subtract(chunk, b[a:z], out=chunk)
    finally:
        os.close(fd)
    return out


def read_range(info: TensorInfo, lo: int, hi: int, out: torch.Tensor) -> torch.Tensor:
    """Flat entries ``[lo, hi)`` of a tensor on disk into the contiguous buffer ``out`` (same dtype)."""
    if out.dtype != info.dtype or out.numel() != hi - lo or not out.is_contiguous() or not 0 <= lo <= hi <= info.numel:
        raise ValueError(f"buffer for {info.name!r} does not match entries [{lo}, {hi}) of {info.dtype} {info.shape}")
    size = out.element_size()
    view = out.reshape(-1).view(torch.uint8)
    with open(info.file, "rb") as f:
        f.seek(info.start + size * lo)
        got = f.readinto(memoryview(view.numpy()))
    if got != size * (hi - lo):
        raise ValueError(f"{info.file}: tensor {info.name!r} truncated")
    return out


def gather_f32(info: TensorInfo, idx: np.ndarray) -> np.ndarray:
    """The entries at the sorted flat indices ``idx`` of a float32 tensor on disk (a sample, chunk by chunk)."""
    _check_f32(info)
    out = np.empty(idx.size, dtype=np.float32)
    buf = np.empty(min(info.numel, _READ_CHUNK), dtype=np.float32)
    fd = os.open(info.file, os.O_RDONLY)
    try:
        for a in range(0, info.numel, _READ_CHUNK):
            b = min(info.numel, a + _READ_CHUNK)
            i, j = np.searchsorted(idx, [a, b])
            if i == j:
                continue
            chunk = buf[: b - a]
            if os.preadv(fd, [memoryview(chunk.view(np.uint8))], info.start + 4 * a) != 4 * (b - a):
                raise ValueError(f"{info.file}: tensor {info.name!r} truncated")
            out[i:j] = chunk[idx[i:j] - a]
    finally:
        os.close(fd)
    return out


def _weight_map(index: Path) -> dict[str, str]:
    """The index's ``weight_map`` (tensor name -> shard file name, as written)."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{index}: not a valid safetensors index ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or "weight_map" not in data:
        raise ValueError(f"{index}: not a valid safetensors index (no `weight_map` object)")
    weight_map = data["weight_map"]
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v for v in weight_map.values()):
        raise ValueError(f"{index}: weight_map must map tensor names to shard file names")
    return weight_map


_Index = tuple[Path, dict[str, str], dict[str, Path]]  # (index file, its weight_map, shard name -> resolved file)


def _check_index(index: Path, weight_map: Mapping[str, str], shards: Mapping[str, Path],
                 tensors: Mapping[str, TensorInfo]) -> None:
    """The index and its shards must agree: every listed tensor is in the shard it is listed in, and every
    tensor of a shard is listed. Why refused: a loader that trusts the index (mergekit) and one that reads the
    shards (ours) would otherwise merge different sets of tensors from the same folder."""
    for name, info in tensors.items():
        if name not in weight_map:
            raise ValueError(f"{index}: tensor {name!r} of shard {info.file.name} is not listed in weight_map")
    for name, rel in weight_map.items():
        info = tensors.get(name)
        if info is None or info.file != shards[rel]:
            raise ValueError(f"{index}: weight_map lists tensor {name!r} in {rel}, which does not hold it")


def _hf_cache_blob(folder: Path, target: Path) -> bool:
    """A Hugging Face hub-cache snapshot (``<repo>/snapshots/<rev>/``) links its files into ``<repo>/blobs/``."""
    return folder.parent.name == "snapshots" and target.parent == folder.parent.parent / "blobs"


def inside_folder(folder: Path, relative: str, what: str) -> Path:
    """``folder / relative``, refused unless it resolves (symlinks followed) to a file inside ``folder``.

    Why refused rather than skipped: a model folder that points outside itself is either damaged or crafted, and
    a merge that quietly left part of it out would write a model that is not what the config names.
    """
    real_folder = Path(folder).resolve()
    target = (real_folder / relative).resolve()
    if real_folder not in target.parents and not _hf_cache_blob(real_folder, target):
        raise ValueError(f"{what} {relative!r} resolves to {target}, outside the model folder {real_folder}; refused")
    if not target.is_file():
        state = "is not a regular file (a folder, FIFO, socket or device)" if target.exists() else "does not exist"
        raise ValueError(f"{what} {relative!r}: {target} {state}")
    return target


class Checkpoint:
    """A read-only view of a checkpoint: a ``.safetensors`` file or a (sharded) Hugging Face folder.

    Only the headers are read on construction; tensors are read one at a time by :meth:`get`.
    """

    def __init__(self, path: str | os.PathLike[str], *, allow_pickle: bool = False) -> None:
        self.path = Path(path)
        self._pickled: dict[str, torch.Tensor] | None = None
        self.tensors: dict[str, TensorInfo] = {}
        files, index = self._files(allow_pickle)
        for file in files:
            for name, info in read_header(file).items():
                if name in self.tensors:
                    raise ValueError(f"{self.path}: tensor {name!r} appears in two shards")
                self.tensors[name] = info
        if index is not None:
            _check_index(*index, self.tensors)

    def _files(self, allow_pickle: bool) -> tuple[list[Path], _Index | None]:
        """The weight files to read, and for a sharded folder the index to check them against."""
        p = self.path
        if p.is_file():
            if p.suffix == ".safetensors":
                return [p], None
            if p.suffix in _PICKLE_SUFFIXES:
                return self._load_pickle(p, allow_pickle), None
            raise ValueError(f"{p}: unknown checkpoint format (expected .safetensors or a model folder)")
        if not p.is_dir():
            raise ValueError(f"checkpoint {p} does not exist")
        index = p / INDEX_FILE
        if index.is_file():
            weight_map = _weight_map(index)
            # each shard once, however the index spells it (``a.safetensors``, ``./a.safetensors``, absolute)
            shards = {f: inside_folder(p, f, f"{index}: weight_map entry") for f in sorted(set(weight_map.values()))}
            return sorted(set(shards.values())), (index, weight_map, shards)
        if (p / SINGLE_FILE).is_file():
            return [inside_folder(p, SINGLE_FILE, f"{p}: weights file")], None
        found = sorted(p.glob("*.safetensors"))
        if found:
            return [inside_folder(p, f.name, f"{p}: weights file") for f in found], None
        pickles = sorted(f for f in p.iterdir() if f.suffix in _PICKLE_SUFFIXES)
        if pickles:
            if len(pickles) > 1:
                raise ValueError(f"{p}: several pickled checkpoints {[f.name for f in pickles]}; convert to safetensors")
            return self._load_pickle(inside_folder(p, pickles[0].name, f"{p}: weights file"), allow_pickle), None
        raise ValueError(f"{p}: no safetensors weights found (looked for {SINGLE_FILE}, {INDEX_FILE}, *.safetensors)")

    def _load_pickle(self, file: Path, allow_pickle: bool) -> list[Path]:
        if not allow_pickle:
            raise ValueError(
                f"{file}: pickled checkpoints are refused (they can execute code); convert it to safetensors, "
                "or pass allow_pickle=True to load it with torch.load(weights_only=True)"
            )
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{file}: torch.load(weights_only=True) refused it: {exc}") from None
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{file}: expected a flat mapping of tensor name -> tensor")
        self._pickled = {str(k): v.contiguous() for k, v in state.items()}
        for name, t in self._pickled.items():
            self.tensors[name] = TensorInfo(name, t.dtype, tuple(t.shape), file, -1, t.numel() * t.element_size())
        return []

    def keys(self) -> list[str]:
        return list(self.tensors)

    def has(self, name: str) -> bool:
        return name in self.tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise ValueError(f"{self.path}: has no tensor {name!r}") from None

    def get(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        info = self.info(name)
        if self._pickled is not None:
            t = self._pickled[name]
            return t if out is None else out.copy_(t)
        return read_tensor(info, out)

    def subtract_into(self, name: str, base: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out = self[name] - base`` in float32 without an intermediate copy where the file allows it."""
        info = self.info(name)
        if self._pickled is None and info.dtype == torch.float32 and base.dtype == torch.float32:
            return subtract_into(info, base, out)
        return torch.sub(self.get(name).to(torch.float32), base, out=out)

    def subtract_range(self, name: str, base: torch.Tensor, out: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """``out = self[name].flat[lo:hi] - base`` for a float32 tensor on disk (see :meth:`on_disk_f32`)."""
        return subtract_into(self.info(name), base, out, lo, hi)

    def on_disk_f32(self, name: str) -> bool:
        """True when ``name`` is a float32 tensor in a safetensors file (readable by entry ranges)."""
        return self._pickled is None and self.info(name).dtype == torch.float32


def _padded_header(entries: Mapping[str, tuple[torch.dtype, tuple[int, ...]]], metadata: Mapping[str, str] | None) -> tuple[bytes, dict[str, int]]:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offsets: dict[str, int] = {}
    pos = 0
    for name, (dtype, shape) in entries.items():
        if dtype not in _CODES:
            raise ValueError(f"tensor {name!r}: dtype {dtype} cannot be stored in safetensors")
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": _CODES[dtype], "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        offsets[name] = pos
        pos += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return raw, offsets


_WRITEBACK_CHUNK = 8 * 1024 * 1024  # the commit's fsync waits for at most this much of each tensor's tail


def _libc_sync_file_range():  # Linux only; elsewhere the commit's fsync does all the work
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return fn


_SYNC_FILE_RANGE = _libc_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, start: int, nbytes: int) -> None:
    """Ask the kernel to start writing back bytes ``[start, start + nbytes)`` of ``fd``, without waiting for it.

    The commit fsyncs every file before renaming it; started early, that writeback overlaps the merge instead of
    adding to its wall time (the fsync then waits only for the tail).
    """
    if _SYNC_FILE_RANGE is not None and nbytes > 0:
        _SYNC_FILE_RANGE(fd, start, nbytes, _SYNC_FILE_RANGE_WRITE)


def _pwrite_all(fd: int, data: memoryview, pos: int) -> None:
    while data:
        n = os.pwrite(fd, data, pos)
        data, pos = data[n:], pos + n


_SYNC_EVERY = 64 * 1024 * 1024  # bytes written between two background fdatasyncs of a file


class _BackgroundSync:
    """fdatasync each output file on a thread of its own every ``_SYNC_EVERY`` bytes written to it.

    Why: the commit fsyncs every file before renaming it, and on a virtual disk that fsync waits for the host to
    make everything written so far durable, however early the guest's writeback was started (``Writeback`` is
    long 0 by then). Syncing as the merge goes overlaps that wait with the merge, so the commit's fsync only
    waits for the last ``_SYNC_EVERY`` bytes. The guarantee is unchanged: nothing is renamed before its fsync.
    """

    def __init__(self, fds: list[int]) -> None:
        self._fds = fds
        self._pending = [0] * len(fds)
        self._due: set[int] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="reprolab-sync", daemon=True)
        self._thread.start()

    def wrote(self, shard: int, nbytes: int) -> None:
        with self._cond:
            self._pending[shard] += nbytes
            if self._pending[shard] >= _SYNC_EVERY:
                self._pending[shard] = 0
                self._due.add(shard)
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                due, self._due = sorted(self._due), set()
            for shard in due:
                with contextlib.suppress(OSError):  # the commit's own fsync reports any real failure
                    os.fdatasync(self._fds[shard])

    def stop(self) -> None:
        """Stop the thread (an fdatasync in progress finishes first); idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()


class StreamingWriter:
    """Write tensors into ``model.safetensors`` or shards plus an index, each at its place in the file.

    The full plan (names, dtypes, shapes) is given up front, so every header, and with it every tensor's byte
    range, is fixed before any data is written. :meth:`write` takes the tensors one at a time in plan order;
    :meth:`write_at` takes them in any order and from several threads at once (each tensor exactly once), which
    is what lets the engine merge several tensors in parallel. Nothing but the tensors being written is held.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        plan: Mapping[str, tuple[torch.dtype, tuple[int, ...]]],
        *,
        max_shard_bytes: int = 5 * 1024**3,
        metadata: Mapping[str, str] | None = None,
        output: OutputFolder | None = None,
    ) -> None:
        """With ``output`` every file goes to its temporary name (renamed by ``output.commit()``); without, the
        files are written in place (library use on folders the caller owns)."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._early_writeback = output is not None  # the commit fsyncs: start writing back while merging

        def target(fname: str) -> Path:
            return output.temp(fname) if output is not None else self.out_dir / fname

        shards: list[dict[str, tuple[torch.dtype, tuple[int, ...]]]] = [{}]
        size = 0
        for name, (dtype, shape) in plan.items():
            nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = (dtype, tuple(shape))
            size += nbytes
        n = len(shards)
        names = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._order = list(plan)
        self._expected = {k: (v[0], tuple(v[1])) for k, v in plan.items()}
        self._next = 0
        self._lock = threading.Lock()
        self._written: set[str] = set()
        self._files = []
        self._place: dict[str, tuple[int, int]] = {}  # name -> (shard, byte offset of its data in the file)
        meta = {"format": "pt", **(metadata or {})}
        for i, (fname, entries) in enumerate(zip(names, shards, strict=True)):
            raw, offsets = _padded_header(entries, meta)
            f = open(target(fname), "wb")  # noqa: SIM115 - closed in close()
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            f.flush()
            self._files.append(f)
            for name in entries:
                self._place[name] = (i, 8 + len(raw) + offsets[name])
        if n > 1:
            total = sum(math.prod(s) * torch.empty((), dtype=d).element_size() for d, s in plan.values())
            index = {"metadata": {"total_size": total}, "weight_map": {k: names[self._place[k][0]] for k in plan}}
            target(INDEX_FILE).write_text(json.dumps(index, indent=2))
        self.files = [self.out_dir / f for f in names]
        self.names = names + ([INDEX_FILE] if n > 1 else [])
        self._sync = _BackgroundSync([f.fileno() for f in self._files]) if self._early_writeback else None

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """The next tensor of the plan, whole."""
        dtype, shape = self._expect_next(name)
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(f"tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, planned {dtype} {shape}")
        self.write_at(name, (tensor,))

    def write_parts(self, name: str, parts: Iterable[torch.Tensor]) -> None:
        """The next tensor of the plan, as consecutive pieces of its flat data (row blocks)."""
        self._expect_next(name)
        self.write_at(name, parts)

    def write_at(self, name: str, parts: Iterable[torch.Tensor]) -> None:
        """Tensor ``name`` (any order, any thread) as consecutive pieces of its flat data, each of the planned dtype."""
        with self._lock:
            if name not in self._place:
                raise ValueError(f"writer: tensor {name!r} is not in the plan")
            if name in self._written:
                raise ValueError(f"writer: tensor {name!r} written twice")
            self._written.add(name)
        dtype, shape = self._expected[name]
        shard, start = self._place[name]
        fd = self._files[shard].fileno()
        total = math.prod(shape)
        n = 0
        pos = synced = start
        for part in parts:
            if part.dtype != dtype:
                raise ValueError(f"tensor {name!r}: a part is {part.dtype}, planned {dtype}")
            n += part.numel()
            if n > total:
                break
            if not part.numel():
                continue
            data = memoryview(part.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy())
            _pwrite_all(fd, data, pos)
            pos += len(data)
            if self._early_writeback and pos - synced >= _WRITEBACK_CHUNK:
                _start_writeback(fd, synced, pos - synced)
                synced = pos
        if n != total:
            raise ValueError(f"tensor {name!r}: parts hold {n} entries, planned {total} ({list(shape)})")
        if self._early_writeback:
            _start_writeback(fd, synced, pos - synced)
        if self._sync is not None:
            self._sync.wrote(shard, pos - start)

    def _expect_next(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        if self._next >= len(self._order) or self._order[self._next] != name:
            want = self._order[self._next] if self._next < len(self._order) else "nothing"
            raise ValueError(f"writer expected tensor {want!r} next, got {name!r}")
        self._next += 1
        return self._expected[name]

    def _close_files(self) -> None:
        if self._sync is not None:
            self._sync.stop()  # before the files close: it holds their descriptors
        for f in self._files:
            f.close()

    def close(self) -> None:
        self._close_files()
        missing = [k for k in self._order if k not in self._written]
        if missing:
            raise ValueError(f"writer closed after {len(self._written)} of {len(self._order)} tensors "
                             f"({missing[0]!r} not written)")

    def __enter__(self) -> StreamingWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._close_files()


def save_state_dict(state: Mapping[str, torch.Tensor], out_dir: str | os.PathLike[str], **kwargs) -> list[Path]:
    """Write an in-memory state dict as a (sharded) Hugging Face weights folder."""
    plan = {k: (v.dtype, tuple(v.shape)) for k, v in state.items()}
    with StreamingWriter(out_dir, plan, **kwargs) as w:
        for k, v in state.items():
            w.write(k, v)
    return w.files


def load_state_dict(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    ckpt = Checkpoint(path, allow_pickle=allow_pickle)
    return {k: ckpt.get(k) for k in ckpt.tensors}


def iter_tensors(ckpt: Checkpoint, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
    for name in names:
        yield name, ckpt.get(name)
