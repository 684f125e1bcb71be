"""The options of hardware-in-the-loop fine-tuning (:mod:`anacc.passes.finetune`), validated
once; a module of its own so that the command line reads the defaults without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from anacc.errors import OptionError

SCALE_UPDATES = ("static", "ema", "learned")
SENDS = ("keep", "before", "search")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class FinetuneOptions:
    """Options of ``anacc finetune`` (docs/finetune.md measures each choice).

    - ``instances``: chip instances in the loop, ``seed .. seed + instances - 1``; batches go
      to them in turn (1: the program learns its chip's own fixed pattern).
    - ``scale_update``: input scales ``static`` (kept, re-derived on the training data at the
      end), ``ema`` (a moving average of the batch extremes) or ``learned`` (LSQ-style).
    - ``column_gain``: learn a digital gain per output column after the ADC.
    - ``affine_lr``: learning rate of the column gains and learned scales (log domain).
    - ``sends``: ``search`` revisits ``num_sends`` per layer before and after training (the
      lowest loss on a slice of the training data; a model whose layer-by-layer search would
      take more than 32 forward passes gets one factor for every layer), ``before`` only
      before it, ``keep`` keeps the compiled ones.
    - ``schedule``: learning rate ``cosine`` (annealed to zero over the epochs) or
      ``constant``; ``patience``: stop after that many epochs without a better validation
      accuracy (None: run every epoch).
    """

    epochs: int = 5
    lr: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    backend: str = "emulator"
    instances: int = 1
    scale_update: str = "static"
    ema_momentum: float = 0.95
    weight_decay: float = 0.0
    column_gain: bool = False
    affine_lr: float = 3e-3
    sends: str = "search"
    schedule: str = "cosine"
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise OptionError("epochs must be at least 1")
        if not self.lr > 0 or not self.affine_lr > 0:
            raise OptionError("the learning rate must be positive")
        if self.batch_size < 1:
            raise OptionError("batch size must be at least 1")
        if self.instances < 1:
            raise OptionError(f"instances {self.instances}: use 1 or more")
        if self.scale_update not in SCALE_UPDATES:
            raise OptionError(
                f"scale update '{self.scale_update}': use one of {', '.join(SCALE_UPDATES)}"
            )
        if self.sends not in SENDS:
            raise OptionError(f"sends '{self.sends}': use one of {', '.join(SENDS)}")
        if self.schedule not in SCHEDULES:
            raise OptionError(f"schedule '{self.schedule}': use one of {', '.join(SCHEDULES)}")
        if self.patience is not None and self.patience < 1:
            raise OptionError(f"patience {self.patience}: use 1 or more")

    @property
    def seeds(self) -> list[int]:
        """The chip instances in the loop."""
        return list(range(self.seed, self.seed + self.instances))
