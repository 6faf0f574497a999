"""Gaussian heatmap targets at stride 16 and their decoding, kept as an inverse pair.

Heatmap cell (i, j) covers input pixels [16 j, 16 j + 15] x [16 i, 16 i + 15],
so its centre is the input pixel ``16 j + 7.5``: ``cell = (pixel - 7.5) / 16``.
Decoding fits a parabola to the log of the peak and its neighbours, which is
exact for an untruncated Gaussian, so encode-then-decode returns the joint.
"""

from __future__ import annotations

from keras import ops

DEFAULT_SIGMA = 1.0  # in heatmap cells


def pixels_to_cells(points, stride: int):
  return (points - (stride - 1) / 2) / stride


def cells_to_pixels(cells, stride: int):
  return cells * stride + (stride - 1) / 2


def encode(joints2d, visible, size: int, stride: int, sigma: float = DEFAULT_SIGMA):
  """(..., K, 2) pixel joints -> (..., size, size, K) Gaussians; invisible joints give zeros."""
  cells = pixels_to_cells(ops.cast(joints2d, "float32"), stride)
  grid = ops.cast(ops.arange(size), "float32")
  dx = grid - cells[..., 0:1]  # (..., K, size) over columns
  dy = grid - cells[..., 1:2]
  gx = ops.exp(-dx * dx / (2 * sigma * sigma))
  gy = ops.exp(-dy * dy / (2 * sigma * sigma))
  maps = gy[..., :, None] * gx[..., None, :]  # (..., K, rows, cols)
  maps = maps * ops.cast(visible, "float32")[..., None, None]
  rank = len(maps.shape)
  return ops.transpose(maps, list(range(rank - 3)) + [rank - 2, rank - 1, rank - 3])


def decode(heatmaps, stride: int, sigma: float = DEFAULT_SIGMA, eps: float = 1e-6):
  """(B, H, W, K) heatmaps -> ((B, K, 2) pixel joints, (B, K) peak values).

  Inside the map a parabola through the log of the peak and both neighbours
  gives the offset; on the border, where one neighbour is missing, the
  Gaussian of width ``sigma`` gives it from the other neighbour alone.
  """
  heatmaps = ops.cast(heatmaps, "float32")
  height, width = heatmaps.shape[1], heatmaps.shape[2]
  flat = ops.reshape(ops.transpose(heatmaps, (0, 3, 1, 2)), (-1, heatmaps.shape[3], height * width))
  peak = ops.argmax(flat, axis=-1)
  row, col = peak // width, peak % width
  confidence = ops.max(flat, axis=-1)

  def log_value(r, c):
    r = ops.clip(r, 0, height - 1)
    c = ops.clip(c, 0, width - 1)
    return ops.log(
      ops.maximum(ops.take_along_axis(flat, (r * width + c)[..., None], axis=-1)[..., 0], eps)
    )

  def offset(minus, centre, plus, at_start, at_end):
    curvature = minus - 2 * centre + plus
    inner = ops.where(curvature < -1e-9, 0.5 * (minus - plus) / ops.minimum(curvature, -1e-9), 0.0)
    variance = sigma * sigma
    start = 0.5 - variance * (centre - plus)  # no neighbour before the peak
    end = -0.5 + variance * (centre - minus)  # no neighbour after it
    return ops.clip(ops.where(at_start, start, ops.where(at_end, end, inner)), -1.0, 1.0)

  centre = log_value(row, col)
  dx = offset(log_value(row, col - 1), centre, log_value(row, col + 1), col == 0, col == width - 1)
  dy = offset(log_value(row - 1, col), centre, log_value(row + 1, col), row == 0, row == height - 1)
  cells = ops.stack([ops.cast(col, "float32") + dx, ops.cast(row, "float32") + dy], axis=-1)
  return cells_to_pixels(cells, stride), confidence
