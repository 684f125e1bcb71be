"""Compile options, validated once: every pass reads them from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from anacc.errors import OptionError

SCALE_METHODS = ("max", "percentile:<p>", "mse", "ema")
ROW_ORDERS = ("natural", "interleaved")
SIGNED_STRATEGIES = ("auto", "shift", "split")
WEIGHT_SCALES = ("column", "layer")
PLACEMENTS = ("time", "energy", "naive")
MAX_CHIPS = 1024


@dataclass(frozen=True)
class CompileOptions:
    """Options of ``anacc compile``.

    - ``scale``: how input scales come from calibration data: ``max``, ``percentile:<p>``
      (clip at the p-th percentile of the input values), ``mse`` (search the clip value that
      minimizes the quantization error), ``ema`` (moving average of per-batch extremes).
    - ``weight_scale``: one weight scale per output ``column`` or per ``layer``.
    - ``signed``: how layers with possibly negative inputs are fed: ``auto`` (per layer by
      cost and error), ``shift`` (offset into the unsigned range, digital bias correction) or
      ``split`` (separate runs for the positive and negative parts).
    - ``shift_max_ratio``: in ``auto``, shift when the negative range is at most this fraction
      of the positive range (the quantization step then grows by at most that fraction).
    - ``row_order``: ``natural`` or ``interleaved`` (strong rows spread out in time).
    - ``gain_factor``: multiplies every layer's chosen ``num_sends`` (more gain: more signal
      and more noise per read, more saturation risk); 1 keeps the percentile rule's choice.
    - ``calib_batch``: batch size of the float model runs that gather calibration statistics.
    - ``placement``: what the placement of tiles optimizes: ``time`` or ``energy`` per sample
      (copies of small layers, several layers per load, both halves per run), or ``naive``
      (one tile per half, loads in model order: the baseline).
    - ``chips``: chips the program runs on (loads spread over them, layers pipelined).
    """

    scale: str = "percentile:99.99"
    weight_scale: str = "column"
    signed: str = "auto"
    shift_max_ratio: float = 0.25
    row_order: str = "natural"
    seed: int = 0
    gain_factor: float = 1.0
    calib_batch: int = 64
    placement: str = "time"
    chips: int = 1

    def __post_init__(self) -> None:
        _ = self.percentile  # validates the scale method
        if self.weight_scale not in WEIGHT_SCALES:
            raise OptionError(
                f"weight scale '{self.weight_scale}': use one of {', '.join(WEIGHT_SCALES)}"
            )
        if self.signed not in SIGNED_STRATEGIES:
            raise OptionError(
                f"signed-input strategy '{self.signed}': use one of {', '.join(SIGNED_STRATEGIES)}"
            )
        if self.row_order not in ROW_ORDERS:
            raise OptionError(f"row order '{self.row_order}': use one of {', '.join(ROW_ORDERS)}")
        if not 0.0 <= self.shift_max_ratio <= 1.0:
            raise OptionError("shift_max_ratio must lie in 0..1")
        if not 0.0 < self.gain_factor <= 64.0:
            raise OptionError(f"gain factor {self.gain_factor}: use a value in (0, 64]")
        if self.calib_batch < 1:
            raise OptionError("calib_batch must be at least 1")
        if self.placement not in PLACEMENTS:
            raise OptionError(f"placement '{self.placement}': use one of {', '.join(PLACEMENTS)}")
        if not 1 <= self.chips <= MAX_CHIPS:
            raise OptionError(f"chips {self.chips}: use 1 to {MAX_CHIPS}")

    @property
    def scale_method(self) -> str:
        return self.scale.split(":", 1)[0]

    @property
    def percentile(self) -> float | None:
        method, _, arg = self.scale.partition(":")
        if method == "percentile":
            try:
                p = float(arg)
            except ValueError:
                p = -1.0
            if not 50.0 < p <= 100.0:
                raise OptionError(
                    f"scale '{self.scale}': write percentile:<p> with 50 < p <= 100, "
                    "e.g. percentile:99.9"
                )
            return p
        if method not in ("max", "mse", "ema") or arg:
            raise OptionError(f"scale method '{self.scale}': use one of {', '.join(SCALE_METHODS)}")
        return None

    def to_dict(self) -> dict:
        return asdict(self)
