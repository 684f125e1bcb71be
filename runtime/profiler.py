"""Where a run's time goes: :class:`Profiler`, per step and per kind of work.

Like onnxruntime's profiler summary: the interpreter tells the profiler which step runs, and
the code that does the work adds the wall time since the profiler's last mark to one *kind*
for that step with :meth:`lap` (code called in between that laps its own kinds moves the mark
on, so nothing counts twice; :meth:`mark` skips time that belongs to no kind):

- ``encode/im2col``: the input encoding and the convolution patches (and the checks on them);
- ``noise``: drawing the random bits and tail values of the trial-to-trial noise (emulator);
- ``analog kernel``: the batched matmul of the charges, dynamic saturation, and the readout
  (noise lookup and scaling, offset, soft saturation, ADC);
- ``rescale``: the digital sum of the per-run reads, rescaled, shift correction and bias,
  written into the output (for a convolution, folded into its channel-major output);
- ``digital ops``: the digital regions (onnxruntime);
- ``data movement``: copies between layouts (contiguous copies for onnxruntime, joining
  batches);
- ``other``: the rest of a step's time (bookkeeping, clip counting, checks).

The peak memory of the run is the kernel's high-water mark of the resident set above the
resident set when the run started (``/proc/self/status``; where the mark cannot be reset, the
process's peak so far). A profiler costs one clock read per lap; without one nothing is timed.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

KINDS = (
    "encode/im2col",
    "noise",
    "analog kernel",
    "rescale",
    "digital ops",
    "data movement",
)
OTHER = "other"
SESSION_STEP = "(session)"


@dataclass
class StepTimes:
    """Time of one step over all calls, and its share per kind."""

    name: str
    op: str
    calls: int = 0
    seconds: float = 0.0
    kinds: dict[str, float] = field(default_factory=dict)

    @property
    def other(self) -> float:
        return max(0.0, self.seconds - sum(self.kinds.values()))


class Profiler:
    """Collects wall time per step and kind; see the module docstring."""

    def __init__(self) -> None:
        self.steps: dict[str, StepTimes] = {}
        self.step: StepTimes | None = None
        self.seconds = 0.0
        self.peak_mb: float | None = None
        self._rss_start = 0.0
        self._start = 0.0
        self._mark = 0.0

    def begin(self, name: str, op: str) -> float:
        """Make ``name`` the current step and set the mark; returns the clock."""
        step = self.steps.get(name)
        if step is None:
            step = self.steps[name] = StepTimes(name, op)
        self.step = step
        self._mark = time.perf_counter()
        return self._mark

    def end(self, start: float) -> None:
        """The current step ends; its wall time counts from ``start``."""
        step = self.step
        assert step is not None
        step.calls += 1
        step.seconds += time.perf_counter() - start
        self.step = None

    def mark(self) -> None:
        """Set the mark: time up to now belongs to no kind (``other``)."""
        self._mark = time.perf_counter()

    def lap(self, kind: str) -> None:
        """Add the time since the mark to ``kind`` of the current step (outside any step: to
        the session's own row) and set the mark."""
        now = time.perf_counter()
        seconds = now - self._mark
        self._mark = now
        step = self.step
        if step is None:
            step = self.steps.get(SESSION_STEP)
            if step is None:
                step = self.steps[SESSION_STEP] = StepTimes(SESSION_STEP, "")
            step.seconds += seconds
        step.kinds[kind] = step.kinds.get(kind, 0.0) + seconds

    def start_run(self) -> None:
        """Reset the memory high-water mark and start the run's clock."""
        self._rss_start = reset_peak_rss()
        self._start = time.perf_counter()

    def end_run(self) -> None:
        self.seconds += time.perf_counter() - self._start
        peak = status_mb("VmHWM")
        if peak is not None:
            self.peak_mb = max(self.peak_mb or 0.0, peak - self._rss_start)

    def kind_totals(self) -> dict[str, float]:
        """Seconds per kind over all steps (``other`` included)."""
        totals = dict.fromkeys((*KINDS, OTHER), 0.0)
        for step in self.steps.values():
            for kind, seconds in step.kinds.items():
                totals[kind] = totals.get(kind, 0.0) + seconds
            totals[OTHER] += step.other
        return totals

    def to_dict(self) -> dict[str, object]:
        return {
            "seconds": self.seconds,
            "peak_mb": self.peak_mb,
            "kinds": self.kind_totals(),
            "steps": [
                {
                    "name": s.name,
                    "op": s.op,
                    "calls": s.calls,
                    "seconds": s.seconds,
                    "kinds": {**s.kinds, OTHER: s.other},
                }
                for s in self.steps.values()
            ],
        }

    def table(self) -> str:
        """Per step: calls, total ms and ms per kind; then the totals per kind and the peak
        memory."""
        kinds = [k for k, v in self.kind_totals().items() if v > 0]
        header = ["step", "op", "calls", "ms", *kinds]
        rows = []
        for s in sorted(self.steps.values(), key=lambda s: -s.seconds):
            values = {**s.kinds, OTHER: s.other}
            times = [_ms(values.get(k, 0.0)) for k in kinds]
            rows.append([s.name, s.op, str(s.calls), _ms(s.seconds), *times])
        lines = [_format(header, rows)]
        total = self.seconds or sum(s.seconds for s in self.steps.values())
        lines.append("")
        lines.append(f"total {_ms(total)} ms; by kind:")
        for kind, seconds in sorted(self.kind_totals().items(), key=lambda kv: -kv[1]):
            if seconds > 0:
                share = 100 * seconds / total if total else 0.0
                lines.append(f"  {kind:<14} {_ms(seconds):>10} ms {share:5.1f} %")
        if self.peak_mb is not None:
            lines.append(f"peak memory: {self.peak_mb:.1f} MB above the resident set at the start")
        return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.2f}"


def _format(header: list[str], rows: list[list[str]]) -> str:
    cells = [header, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = []
    for r in cells:
        left = [c.ljust(w) for c, w in zip(r[:2], widths[:2], strict=True)]
        right = [c.rjust(w) for c, w in zip(r[2:], widths[2:], strict=True)]
        out.append("  ".join(left + right).rstrip())
    return "\n".join(out)


def status_mb(name: str) -> float | None:
    """A ``/proc/self/status`` memory field in MB (None where there is none)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    return None


def reset_peak_rss() -> float:
    """Restart the kernel's high-water mark at the current resident set (where allowed);
    returns the resident set in MB (0 where unknown)."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return status_mb("VmRSS") or 0.0
