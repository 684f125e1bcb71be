"""Accuracy across emulated chip instances: how a program fares on many chips, not one.

Every emulated chip instance (a seed of the ``emulator`` backend) has its own fixed pattern:
neuron gains and offsets, synapse mismatch, saturation points. :func:`evaluate_instances`
runs a program on the data once per instance and :class:`InstanceStats` summarizes the
accuracies (mean, standard deviation, worst and best instance, a histogram). The instances
run one after another in this process, or with ``address`` as Ray tasks on a cluster (the
session handling of :func:`anacc.tune.engine.ray_session`; Ray comes with the ``tune``
extra): the program travels as its file's bytes, the data as arrays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from anacc.compiler.datafile import Dataset, match_inputs
from anacc.compiler.program import Program
from anacc.runtime.session import DEFAULT_BATCH_SIZE, Session

from anacc.errors import DataError, OptionError

HISTOGRAM_BINS = 10
MAX_INSTANCES = 10_000


@dataclass(frozen=True)
class InstanceStats:
    """Top-1 accuracy on each chip instance (``seeds[i]`` scored ``accuracies[i]``)."""

    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]
    samples: int
    seconds: float
    where: str  # "local" or the Ray address

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Standard deviation over instances (ddof 1; 0 for one instance)."""
        if len(self.accuracies) < 2:
            return 0.0
        return float(np.std(self.accuracies, ddof=1))

    @property
    def worst(self) -> tuple[int, float]:
        """The seed of the worst instance and its accuracy (the first such seed)."""
        i = int(np.argmin(self.accuracies))
        return self.seeds[i], self.accuracies[i]

    @property
    def best(self) -> tuple[int, float]:
        i = int(np.argmax(self.accuracies))
        return self.seeds[i], self.accuracies[i]

    def histogram(self, bins: int = HISTOGRAM_BINS) -> tuple[list[float], list[int]]:
        """Bin edges (``bins + 1``) and counts of the accuracies, over ``[worst, best]`` (one
        bin of width zero's worth widened to a hundredth of a point when all are equal)."""
        lo, hi = min(self.accuracies), max(self.accuracies)
        if hi - lo < 1e-4:
            lo, hi = lo - 5e-5, hi + 5e-5
        counts, edges = np.histogram(self.accuracies, bins=bins, range=(lo, hi))
        return [float(e) for e in edges], [int(c) for c in counts]

    def to_json(self) -> dict[str, Any]:
        edges, counts = self.histogram()
        worst_seed, worst = self.worst
        best_seed, best = self.best
        return {
            "instances": len(self.seeds),
            "seeds": list(self.seeds),
            "accuracies": [round(a, 6) for a in self.accuracies],
            "mean": round(self.mean, 6),
            "std": round(self.std, 6),
            "worst": {"seed": worst_seed, "accuracy": round(worst, 6)},
            "best": {"seed": best_seed, "accuracy": round(best, 6)},
            "histogram": {"edges": [round(e, 6) for e in edges], "counts": counts},
            "samples": self.samples,
            "seconds": round(self.seconds, 4),
            "where": self.where,
        }

    def render_text(self, width: int = 40) -> str:
        """Summary line and a text histogram, one line per bin."""
        worst_seed, worst = self.worst
        best_seed, best = self.best
        lines = [
            f"accuracy over {len(self.seeds)} chip instances (seeds {_seed_range(self.seeds)}), "
            f"{self.samples} samples each: mean {100 * self.mean:.2f} %, std "
            f"{100 * self.std:.2f} %, worst {100 * worst:.2f} % (seed {worst_seed}), best "
            f"{100 * best:.2f} % (seed {best_seed})"
        ]
        edges, counts = self.histogram()
        top = max(counts)
        for i, count in enumerate(counts):
            bar = "#" * (math.ceil(width * count / top) if count else 0)
            span = f"{100 * edges[i]:6.2f} .. {100 * edges[i + 1]:6.2f} %"
            lines.append(f"  {span}  {count:4d}  {bar}".rstrip())
        return "\n".join(lines)


def _seed_range(seeds: Sequence[int]) -> str:
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(map(str, seeds))


def instance_seeds(instances: int, first: int = 0) -> list[int]:
    """``instances`` consecutive seeds from ``first``; an unusable count is an error."""
    if not 1 <= instances <= MAX_INSTANCES:
        raise OptionError(f"instances {instances}: use 1 to {MAX_INSTANCES}")
    return list(range(first, first + instances))


def _accuracy(program: Program, data: Dataset, backend: str, seed: int, batch_size: int) -> float:
    acc = Session(program, backend, seed).evaluate(data, batch_size=batch_size).accuracy
    assert acc is not None
    return acc


def _remote_accuracy(
    program_bytes: bytes, data: Dataset, backend: str, seed: int, batch_size: int
) -> float:
    """One instance in a Ray task (one thread): the program from its file's bytes."""
    import torch
    from anacc.compiler.program_io import program_from_bytes

    torch.set_num_threads(1)
    program = program_from_bytes(program_bytes, "<program>")
    return _accuracy(program, data, backend, seed, batch_size)


def evaluate_instances(
    program: Program,
    data: Dataset | dict[str, np.ndarray],
    seeds: Sequence[int],
    *,
    backend: str = "emulator",
    batch_size: int = DEFAULT_BATCH_SIZE,
    address: str | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> InstanceStats:
    """Top-1 accuracy of ``program`` on ``data`` (with ``labels``) on each chip instance of
    ``seeds``: here one after another, or with ``address`` (``auto``, ``HOST:PORT`` or
    ``ray://HOST:PORT``) as one Ray task per instance on that cluster. ``progress(seed,
    accuracy)`` is called as each local instance finishes."""
    if not seeds:
        raise OptionError("instances: give at least one chip instance")
    if not isinstance(data, Dataset):
        data = match_inputs(dict(data), program.inputs, "instance data")
    if data.labels is None:
        raise DataError(f"{data.path}: accuracy over chip instances needs 'labels'")
    t0 = time.perf_counter()
    if address is None:
        accs = []
        for seed in seeds:
            accs.append(_accuracy(program, data, backend, seed, batch_size))
            if progress is not None:
                progress(seed, accs[-1])
        where = "local"
    else:
        accs = _on_ray(program, data, list(seeds), backend, batch_size, address)
        where = address
    return InstanceStats(tuple(seeds), tuple(accs), data.samples, time.perf_counter() - t0, where)


def _on_ray(
    program: Program,
    data: Dataset,
    seeds: list[int],
    backend: str,
    batch_size: int,
    address: str,
) -> list[float]:
    try:
        import ray
    except ImportError:
        from anacc.tune.engine import INSTALL_HINT

        raise OptionError(
            f"running chip instances on a Ray cluster needs Ray; install it with: {INSTALL_HINT}"
        ) from None
    from anacc.compiler.program_io import program_to_bytes

    from anacc.tune.engine import ray_session

    with ray_session(address, cpus=1) as session:
        task = session.remote(num_cpus=1)(_remote_accuracy)
        blob = session.put(program_to_bytes(program))
        shared = session.put(data)
        refs = [task.remote(blob, shared, backend, s, batch_size) for s in seeds]
        try:
            return [float(a) for a in session.get(refs)]
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()
            raise OptionError(
                f"a chip instance failed on the Ray cluster at '{address}': "
                f"{first[-1] if first else type(exc).__name__}"
            ) from None
