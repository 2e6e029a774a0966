"""Measuring instruments: peak memory from the kernel's high-water mark, and percentiles."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (a prefork worker's pool children, say)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


class PeakRss:
    """Peak resident set of some processes, summed over them, between ``reset()`` and ``mb()``.

    Reads each process's VmHWM, which Linux keeps exactly; ``reset()`` rewinds it to the current
    RSS (``clear_refs``). The sum of per-process peaks bounds the peak of their sum from above.
    """

    def __init__(self, pids: Callable[[], Iterable[int]] = lambda: [os.getpid()]):
        self.pids = pids
        self.seen = 0.0  # the highest sum sampled while ``sampling()``: processes that exit count too

    def reset(self) -> PeakRss:
        for pid in self.pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass  # the peak then counts from the process's start: still an upper bound
        return self

    def mb(self) -> float:
        return max(self.seen, round(sum(_status_kb(pid, "VmHWM") for pid in self.pids()) / 1024, 1))

    @contextmanager
    def sampling(self, interval: float = 0.1) -> Iterator[PeakRss]:
        """Sample while the block runs, so that short-lived processes (a pool's) are counted.

        Samples add up proportional set sizes (PSS): forked processes share pages, and summing
        their resident sets would count those pages once per process.
        """
        done = threading.Event()

        def sample() -> None:
            while not done.wait(interval):
                self.seen = max(self.seen, round(sum(_pss_kb(pid) for pid in self.pids()) / 1024, 1))

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@contextmanager
def profiled(directory: Path | None, stage: str, pids: Iterable[int]) -> Iterator[None]:
    """Sample ``pids`` with py-spy while the block runs; each gets a raw profile and a top list.

    Only threads holding the GIL are sampled: the profile shows where the CPU goes, not waits.
    """
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if directory is None or spy is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spies = {pid: subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--nonblocking", "--gil", "--rate", "250", "--format", "raw",
         "--output", str(directory / f"{stage}-{pid}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid in pids}
    try:
        yield
    finally:
        for proc in spies.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for pid, proc in spies.items():
            proc.wait(60)
            raw = directory / f"{stage}-{pid}.txt"
            if raw.exists():
                raw.with_suffix(".top.txt").write_text(top_frames(raw))


def top_frames(raw: Path, limit: int = 40) -> str:
    """The functions present in the most samples of a py-spy raw profile (inclusive share)."""
    frames: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            frames[frame] += int(count)
    return "\n".join(f"{n / total:6.1%}  {frame}" for frame, n in frames.most_common(limit)) + "\n"
