"""Run gpu claims through their real experiments on stand-in data: one line per claim, nothing recorded.

Claims that share every task (same experiment, configs and seeds: e.g. the 22 MASSIVE claims read one suite)
are rehearsed together in one fresh worker, so each line's peak RSS is that worker's own high-water mark
(``VmHWM``) and a shared run is not paid twice. The result cache is off and the history is never written.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from reprolab.claims.environment import REHEARSAL_ENV, backend, framework_of
from reprolab.claims.loader import LoadedClaim
from reprolab.claims.session import ClaimSession
from reprolab.rehearse.overrides import Caps, rehearsal_config


@dataclass
class RehearsalLine:
    claim: str
    experiment: str
    ok: bool
    seconds: float  # wall time of the claim's (possibly shared) worker run
    peak_rss_mb: float | None
    device: str  # e.g. "cpu (no CUDA)" or "cuda"
    cause: str = ""
    shared_with: int = 1  # claims served by the same run
    config: dict | None = None  # the config as rehearsed (first arm), for `reprolab plan`
    n_seeds: int = 0  # seeds as rehearsed

    def render(self) -> str:
        rss = f"{self.peak_rss_mb:.0f} MB" if self.peak_rss_mb is not None else "n/a"
        shared = f", run shared by {self.shared_with} claims" if self.shared_with > 1 else ""
        head = "rehearsed" if self.ok else "ERROR    "
        tail = "" if self.ok else f"  {self.cause}"
        return f"{head} {self.claim}  {self.seconds:.1f}s  peak RSS {rss}  on {self.device}{shared}{tail}"


def device_of(experiment: str) -> str:
    """The device the experiment's framework offers here (the line says when a gpu claim ran on CPU)."""
    framework = framework_of(experiment) or "torch"
    found = backend(framework)
    return f"cuda ({framework})" if found == "cuda" else f"{found} ({framework}: no CUDA backend)"


def _children_peak_rss_mb() -> float | None:
    """Largest VmHWM among this process's live children (the session's worker), in MB; None off Linux."""
    try:
        pids = [
            p for task in Path("/proc/self/task").iterdir() for p in (task / "children").read_text().split()
        ]
        peaks = []
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return max(peaks) if peaks else None
    except OSError:
        return None


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def rehearsal_claim(
    item: LoadedClaim, *, caps: Caps, on_cpu: bool, max_seeds: int | None = None
) -> LoadedClaim:
    """A copy of the claim with the rehearsal's configs (the claim file and the loaded claim are untouched);
    ``max_seeds`` keeps only the first seeds (a code-path check needs one, a verdict would need them all)."""
    claim = item.claim
    update: dict = {"config": rehearsal_config(claim.experiment, claim.config, caps=caps, on_cpu=on_cpu)}
    if max_seeds is not None and len(claim.seed_list) > max_seeds:
        update["seeds"] = claim.seed_list[:max_seeds]
    if claim.arms:
        update["arms"] = {
            name: rehearsal_config(claim.experiment, arm, caps=caps, on_cpu=on_cpu)
            for name, arm in claim.arms.items()
        }
    return replace(item, claim=claim.model_copy(update=update))


def _group_key(item: LoadedClaim) -> str:
    c = item.claim
    return json.dumps([c.experiment, c.arm_configs(), c.seed_list], sort_keys=True, default=str)


def rehearse_claims(
    session: ClaimSession,
    items: Sequence[LoadedClaim],
    env: dict[str, str],
    *,
    caps: Caps,
    max_seeds: int | None = None,
    on_line: Callable[[RehearsalLine], None] | None = None,
) -> list[RehearsalLine]:
    """Rehearse ``items`` (selected through ``session``) with ``env`` pointing at the stand-in data, their
    configs capped by ``caps`` (:func:`reprolab.rehearse.overrides.caps_for`)."""
    lines: list[RehearsalLine] = []
    with _environment({**env, REHEARSAL_ENV: "1"}):
        devices = {it.claim.experiment: device_of(it.claim.experiment) for it in items}
        prepared = [
            rehearsal_claim(
                it, caps=caps, on_cpu=not devices[it.claim.experiment].startswith("cuda"), max_seeds=max_seeds
            )
            for it in items
        ]
        groups: dict[str, list[LoadedClaim]] = {}
        for it in prepared:
            groups.setdefault(_group_key(it), []).append(it)
        for group in groups.values():
            start = time.perf_counter()
            # a fresh session per group: a fresh worker, so its high-water mark is this group's alone
            with ClaimSession(session.project, use_cache=False, timeout_s=session.timeout_s) as run:
                results = run.run(group)
                peak = _children_peak_rss_mb()
            seconds = time.perf_counter() - start
            for it, result in zip(group, results, strict=True):
                # a rehearsal checks the code paths, not the statistics: an experiment that returned its metric
                # on every seed rehearsed, even when a verdict on so few seeds has no interval
                ran = (
                    result.traceback is None
                    and bool(result.values)
                    and all(
                        len(values) == len(it.claim.seed_list) and all(math.isfinite(v) for v in values)
                        for values in result.values.values()
                    )
                )
                ok = result.verdict not in ("error", "skipped") or ran
                cause = "" if ok else (result.message.splitlines()[0] if result.message else result.verdict)
                line = RehearsalLine(
                    it.id,
                    it.claim.experiment,
                    ok,
                    seconds,
                    peak,
                    devices[it.claim.experiment],
                    cause,
                    len(group),
                    next(iter(it.claim.arm_configs().values())),
                    len(it.claim.seed_list),
                )
                lines.append(line)
                if on_line:
                    on_line(line)
    return lines


def save_measurements(
    path: Path, scale: str, lines: Sequence[RehearsalLine], data_env: dict[str, str], steps: str | None = None
) -> None:
    """What `reprolab plan` extrapolates from (written atomically next to the stand-in data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    record = {"scale": scale, "steps": steps or scale, "env": data_env, "lines": [asdict(x) for x in lines]}
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
