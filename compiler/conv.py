"""The geometry of a lowered convolution, in one place: :class:`ConvGeometry`.

A 1-D or 2-D convolution runs on the chip as a matrix product over image patches (im2col): the
input ``(N, C_in, *spatial)`` becomes rows ``(N * positions, C_in * prod(kernel))`` in
channel-major patch order (the layout of ``torch.nn.functional.unfold``), the kernel
``(C_out, C_in / group, *kernel)`` becomes the matrix ``(C_in * prod(kernel), C_out)``
(block-diagonal for grouped convolutions), and the product rows ``(N * positions, C_out)``
fold back into ``(N, C_out, *out_spatial)``. ``pads`` are the begins of every spatial axis,
then the ends, as in ONNX.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# (i, j, slice along h, slice along w) for every kernel offset
_Taps = tuple[tuple[int, int, slice, slice], ...]


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, strides, pads (begins then ends), dilations, groups and channel counts."""

    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    group: int
    in_channels: int
    out_channels: int
    # per input size: what multiplicity() and _taps() computed (small, kept with the geometry)
    _copies: dict = field(default_factory=dict, compare=False, repr=False)
    _tap_plans: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("kernel_shape", "strides", "pads", "dilations"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        n = len(self.kernel_shape)
        assert n in (1, 2), "convolutions are 1-D or 2-D"
        assert len(self.strides) == len(self.dilations) == n and len(self.pads) == 2 * n
        assert self.in_channels % self.group == 0 and self.out_channels % self.group == 0

    # -- sizes --------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return len(self.kernel_shape)

    @property
    def kernel_size(self) -> int:
        return math.prod(self.kernel_shape)

    @property
    def in_features(self) -> int:
        """Rows of the weight matrix: ``C_in * prod(kernel)``."""
        return self.in_channels * self.kernel_size

    @property
    def weights(self) -> int:
        """Model weights in the matrix (the other entries of a grouped conv are zeros)."""
        return self.in_features * self.out_channels // self.group

    def output_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        n = self.rank
        k, s, d, p = self.kernel_shape, self.strides, self.dilations, self.pads
        return tuple(
            (spatial[i] + p[i] + p[i + n] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(n)
        )

    def positions(self, spatial: tuple[int, ...]) -> int:
        """Output positions (input vectors per sample) for an input of size ``spatial``."""
        return math.prod(self.output_shape(spatial))

    # -- weights ------------------------------------------------------------------------
    def weight_matrix(self, kernel: np.ndarray) -> np.ndarray:
        """``(C_out, C_in/g, *k)`` kernel -> ``(C_in * prod(k), C_out)`` patch matrix."""
        g, k = self.group, self.kernel_size
        cg, og = kernel.shape[1], self.out_channels // g
        mat = np.zeros((cg * g * k, self.out_channels), dtype=kernel.dtype)
        for i in range(g):
            block = kernel[i * og : (i + 1) * og].reshape(og, cg * k).T
            mat[i * cg * k : (i + 1) * cg * k, i * og : (i + 1) * og] = block
        return mat

    def kernel(self, mat: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`weight_matrix`: ``(C_in * prod(k), C_out)`` -> the kernel."""
        g, kk = self.group, self.kernel_size
        cg, og = self.in_channels // g, self.out_channels // g
        w = np.empty((self.out_channels, cg, *self.kernel_shape), dtype=mat.dtype)
        for i in range(g):
            block = mat[i * cg * kk : (i + 1) * cg * kk, i * og : (i + 1) * og]
            w[i * og : (i + 1) * og] = block.T.reshape(og, cg, *self.kernel_shape)
        return w

    def block_mask(self) -> np.ndarray:
        """``(in_features, C_out)`` bool: True on the entries a grouped conv's blocks hold."""
        g, kk = self.group, self.kernel_size
        cg, og = self.in_channels // g, self.out_channels // g
        mask = np.zeros((self.in_features, self.out_channels), dtype=bool)
        for i in range(g):
            mask[i * cg * kk : (i + 1) * cg * kk, i * og : (i + 1) * og] = True
        return mask

    # -- patches (torch) ----------------------------------------------------------------
    def _taps(self, spatial: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, int], _Taps]:
        """The 2-D view of the geometry on ``spatial`` (a 1-D conv as height 1): pads (top,
        left, bottom, right), the output size, and per kernel offset ``(i, j)`` the slices of
        the padded input it reads, in (kh, kw) order (built once per input size)."""
        found = self._tap_plans.get(spatial)
        if found is None:
            found = self._tap_plans[spatial] = self._tap_plan(spatial)
        return found

    def _tap_plan(self, spatial: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, int], _Taps]:
        k, s, d, p = self.kernel_shape, self.strides, self.dilations, self.pads
        if self.rank == 1:
            k, s, d, p = (1, k[0]), (1, s[0]), (1, d[0]), (0, p[0], 0, p[1])
        height, width = spatial[0] + p[0] + p[2], spatial[1] + p[1] + p[3]
        out_h = (height - d[0] * (k[0] - 1) - 1) // s[0] + 1
        out_w = (width - d[1] * (k[1] - 1) - 1) // s[1] + 1
        taps = [
            (
                i,
                j,
                slice(i * d[0], i * d[0] + s[0] * (out_h - 1) + 1, s[0]),
                slice(j * d[1], j * d[1] + s[1] * (out_w - 1) + 1, s[1]),
            )
            for i in range(k[0])
            for j in range(k[1])
        ]
        return tuple(p), (out_h, out_w), tuple(taps)

    def im2col(self, x: torch.Tensor, pad_value: float = 0.0) -> torch.Tensor:
        """Patches of ``x`` ``(N, C, *spatial)`` as rows ``(N * positions, C * prod(k))``,
        channel-major, positions in row-major output order; the padding holds ``pad_value``.
        :meth:`patches` of a padded channels-last copy of ``x``."""
        if self.rank == 1:
            x = x.unsqueeze(2)
        n, c, h, w = x.shape
        p = self.pads_2d((h, w))
        if any(p):
            padded = x.new_full((n, h + p[0] + p[2], w + p[1] + p[3], c), pad_value)
            padded[:, p[0] : p[0] + h, p[1] : p[1] + w] = x.permute(0, 2, 3, 1)
        else:
            padded = x.permute(0, 2, 3, 1).contiguous()
        return self.patches(padded, (h, w))

    def pads_2d(self, spatial: tuple[int, int]) -> tuple[int, ...]:
        """The pads ``(top, left, bottom, right)`` of the 2-D view (a 1-D conv as height 1)
        on an input of 2-D size ``spatial``."""
        return self._taps(spatial)[0]

    def patch_grid(self, spatial: tuple[int, int]) -> tuple[int, ...]:
        """``(kh, kw, stride_h, stride_w, dilation_h, dilation_w, out_h, out_w)`` of the 2-D
        view on an input of 2-D size ``spatial``."""
        _, (out_h, out_w), _ = self._taps(spatial)
        kh, kw = (1, *self.kernel_shape) if self.rank == 1 else self.kernel_shape
        return (kh, kw, *self._strides_2d(), *self._dilations_2d(), out_h, out_w)

    def patches(self, padded: torch.Tensor, spatial: tuple[int, int]) -> torch.Tensor:
        """The rows of :meth:`im2col` from ``padded`` ``(N, H + top + bottom, W + left +
        right, C)``, the input of 2-D size ``spatial`` channels-last inside its padding
        (contiguous).

        A 1x1 kernel at stride 1 reads the padded input as it is (a view). With more channels
        than kernel taps, one strided copy per tap (each moves whole channel vectors); with
        fewer, one copy of a strided view of all patches (a loop over many taps would cost
        more in calls than in data). Both take a fraction of the time of
        ``torch.nn.functional.unfold`` plus its transposed copy.
        """
        n, height, width, c = padded.shape
        _, (out_h, out_w), taps = self._taps(spatial)
        kh, kw = (1, *self.kernel_shape) if self.rank == 1 else self.kernel_shape
        if len(taps) == 1 and (out_h, out_w) == (height, width):
            return padded.view(n * out_h * out_w, c)
        if c < kh * kw:
            (sh, sw), (dh, dw) = self._strides_2d(), self._dilations_2d()
            view = padded.as_strided(
                (n, out_h, out_w, c, kh, kw),
                (height * width * c, sh * width * c, sw * c, 1, dh * width * c, dw * c),
            )
            return view.reshape(n * out_h * out_w, c * kh * kw)
        rows = padded.new_empty(n, out_h, out_w, c, kh, kw)
        for i, j, along_h, along_w in taps:
            rows[..., i, j] = padded[:, along_h, along_w]
        return rows.view(n * out_h * out_w, c * kh * kw)

    def _strides_2d(self) -> tuple[int, int]:
        s = self.strides
        return (1, s[0]) if self.rank == 1 else (s[0], s[1])

    def _dilations_2d(self) -> tuple[int, int]:
        d = self.dilations
        return (1, d[0]) if self.rank == 1 else (d[0], d[1])

    def multiplicity(self, spatial: tuple[int, ...]) -> torch.Tensor:
        """How often :meth:`im2col` copies each input position (float ``spatial``)."""
        found = self._copies.get(spatial)
        if found is None:
            found = self._copies[spatial] = self._multiplicity(tuple(spatial))
        return found

    def _multiplicity(self, spatial: tuple[int, ...]) -> torch.Tensor:
        hw = (1, *spatial) if self.rank == 1 else tuple(spatial)
        p, _, taps = self._taps(hw)  # type: ignore[arg-type]
        count = torch.zeros(hw[0] + p[0] + p[2], hw[1] + p[1] + p[3])
        for _, _, along_h, along_w in taps:
            count[along_h, along_w] += 1
        return count[p[0] : p[0] + hw[0], p[1] : p[1] + hw[1]].reshape(tuple(spatial))

    def col2im(self, rows: torch.Tensor, batch: int, out_spatial: tuple[int, ...]) -> torch.Tensor:
        """Output rows ``(N * positions, C_out)`` -> ``(N, C_out, *out_spatial)``."""
        c_out = rows.shape[1]
        return rows.reshape(batch, -1, c_out).transpose(1, 2).reshape(batch, c_out, *out_spatial)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the zero padding :meth:`im2col` applies (for convolutions on it)."""
        p = self.pads
        pads = (p[0], p[1]) if self.rank == 1 else (p[1], p[3], p[0], p[2])
        return torch.nn.functional.pad(x, pads) if any(pads) else x

    # -- patches (numpy, for statistics) ------------------------------------------------
    def sample_rows(self, x: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
        """Up to ``keep`` random rows of ``im2col(x)`` (all if there are no more), drawn as
        ``rows[rng.choice(len(rows), keep, replace=False)]`` would draw them, without
        building the others."""
        out_spatial = self.output_shape(tuple(x.shape[2:]))
        positions = math.prod(out_spatial)
        n_rows = x.shape[0] * positions
        pick = np.arange(n_rows) if n_rows <= keep else rng.choice(n_rows, keep, replace=False)
        k, s, d, p = self.kernel_shape, self.strides, self.dilations, self.pads
        n = self.rank
        xp = np.pad(x, [(0, 0), (0, 0)] + [(p[i], p[i + n]) for i in range(n)])
        # index arrays broadcasting to (rows, C, *kernel): the sample, the channel, and per
        # spatial axis the input coordinate of each tap (position * stride + tap * dilation)
        ones = (1,) * n
        index = [
            (pick // positions).reshape(-1, 1, *ones),
            np.arange(x.shape[1]).reshape(1, -1, *ones),
        ]
        out_pos = np.unravel_index(pick % positions, out_spatial)
        for i in range(n):
            coord = out_pos[i][:, None] * s[i] + np.arange(k[i]) * d[i]  # (rows, k_i)
            index.append(coord.reshape(-1, 1, *(k[i] if j == i else 1 for j in range(n))))
        return xp[tuple(index)].reshape(len(pick), -1)

    # -- serialization ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel_shape": list(self.kernel_shape),
            "strides": list(self.strides),
            "pads": list(self.pads),
            "dilations": list(self.dilations),
            "group": self.group,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConvGeometry:
        return cls(
            kernel_shape=tuple(d["kernel_shape"]),
            strides=tuple(d["strides"]),
            pads=tuple(d["pads"]),
            dilations=tuple(d["dilations"]),
            group=int(d["group"]),
            in_channels=int(d["in_channels"]),
            out_channels=int(d["out_channels"]),
        )
