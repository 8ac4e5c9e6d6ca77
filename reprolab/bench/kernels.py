"""What the lab knows about its kernels beyond their timings: ``benchmarks/kernels.yaml``.

Per kernel (matched by a substring of pytest-benchmark's ``fullname``, first entry wins): whether it is
CPU-bound (then it is compared as a ratio to the reference kernel timed in the same run, which cancels a busy or
slower machine), its target in words (and in seconds where the target is absolute), and the peer whose figure the
same run measured (another benchmark of the run, or a number the test put in ``extra_info``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reprolab.validation import is_real


class KernelConfigError(ValueError):
    """A malformed kernels.yaml; the message names the file and the field."""


@dataclass(frozen=True)
class Peer:
    name: str  # e.g. "scikit-learn"
    kernel: str | None = None  # substring of the peer benchmark's fullname in the same run
    extra_info: str | None = None  # or: a key of this kernel's extra_info holding the peer's seconds


@dataclass(frozen=True)
class KernelInfo:
    match: str
    cpu_bound: bool = True
    target: str | None = None
    target_seconds: float | None = None
    peer: Peer | None = None


@dataclass(frozen=True)
class KernelConfig:
    reference: str | None = None  # substring of the reference kernel's fullname
    kernels: tuple[KernelInfo, ...] = ()

    def info(self, kernel: str) -> KernelInfo:
        for entry in self.kernels:
            if entry.match in kernel:
                return entry
        return KernelInfo(match=kernel)

    def is_reference(self, kernel: str) -> bool:
        return bool(self.reference) and self.reference in kernel


def _text(value: Any, where: str) -> None:
    """An optional string field (a number there is matched or printed as text nowhere, and failed later)."""
    if value is not None and (not isinstance(value, str) or not value):
        raise KernelConfigError(f"{where}: expected a non-empty string, got {value!r}")


_KERNEL_KEYS = {"match", "cpu_bound", "target", "target_seconds", "peer"}


def _kernel(entry: Any, where: str) -> KernelInfo:
    if not isinstance(entry, Mapping):
        raise KernelConfigError(f"{where}: expected a mapping")
    unknown = set(entry) - _KERNEL_KEYS
    if unknown:
        raise KernelConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    if not isinstance(entry.get("match"), str) or not entry["match"]:
        raise KernelConfigError(f"{where}.match: a non-empty string is required")
    peer = entry.get("peer")
    if peer is not None:
        if not isinstance(peer, Mapping) or not isinstance(peer.get("name"), str):
            raise KernelConfigError(f"{where}.peer: needs a 'name' and one of 'kernel' / 'extra_info'")
        if (peer.get("kernel") is None) == (peer.get("extra_info") is None) or set(peer) - {
            "name", "kernel", "extra_info"
        }:
            raise KernelConfigError(f"{where}.peer: needs exactly one of 'kernel' / 'extra_info'")
        for key in ("name", "kernel", "extra_info"):
            _text(peer.get(key), f"{where}.peer.{key}")
        peer = Peer(name=peer["name"], kernel=peer.get("kernel"), extra_info=peer.get("extra_info"))
    seconds = entry.get("target_seconds")
    if seconds is not None and (not is_real(seconds) or not 0 < seconds < math.inf):
        raise KernelConfigError(f"{where}.target_seconds: expected a number of seconds > 0, got {seconds!r}")
    if not isinstance(entry.get("cpu_bound", True), bool):
        raise KernelConfigError(f"{where}.cpu_bound: expected true or false, got {entry['cpu_bound']!r}")
    _text(entry.get("target"), f"{where}.target")
    return KernelInfo(
        match=entry["match"],
        cpu_bound=entry.get("cpu_bound", True),
        target=entry.get("target"),
        target_seconds=None if seconds is None else float(seconds),
        peer=peer,
    )


def load_kernel_config(path: Path | None) -> KernelConfig:
    """Read kernels.yaml; a missing file is an empty config (every kernel CPU-bound, no reference)."""
    if path is None or not path.exists():
        return KernelConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise KernelConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise KernelConfigError(f"{path}: not YAML: {exc}") from None
    if not isinstance(data, Mapping) or set(data) - {"reference", "kernels"}:
        raise KernelConfigError(f"{path}: expected the keys 'reference' and 'kernels'")
    _text(data.get("reference"), f"{path}: reference")
    entries = data.get("kernels") or []
    if not isinstance(entries, list):
        raise KernelConfigError(f"{path}: kernels: expected a list")
    return KernelConfig(
        reference=data.get("reference"),
        kernels=tuple(_kernel(entry, f"{path}: kernels[{i}]") for i, entry in enumerate(entries)),
    )


def default_kernel_config_path(project_root: Path) -> Path:
    return project_root / "benchmarks" / "kernels.yaml"
