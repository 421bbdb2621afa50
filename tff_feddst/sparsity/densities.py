"""Per-layer densities for a global sparsity S (uniform, ER, ERK, FedDST's ERK).

Computed once, in plain Python, from the prunable kernels' shapes: the result
is static configuration (live counts per layer) for the TFF computations.

* `uniform`: every layer has density 1 - S.
* `er` / `erk` (Evci et al., RigL): density ∝ (n_in + n_out) / (n_in n_out),
  and for `erk` ∝ sum(shape) / prod(shape) (the kernel dims count too).
  Layers that would exceed density 1 become dense and the rest are
  re-normalized, so that the live weights total exactly round((1 - S) N).
* `feddst_erk` (the FedDST reference code): each layer's ER-K *sparsity*
  1 - sum(shape) / prod(shape) is multiplied by one factor so that the
  parameter-weighted mean sparsity (layer sizes counting biases) is S. It gives
  nearly uniform sparsities where RigL's ERK leaves small layers dense. A
  layer pushed past sparsity 1 keeps one weight (the reference would leave it
  dense, which breaks the budget).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tff_feddst import choices

DISTRIBUTIONS = choices.SPARSITY_DISTRIBUTIONS


def _check(kernel_shapes, sparsity, distribution):
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f'Unknown sparsity distribution {distribution!r}; '
                     f'expected one of {DISTRIBUTIONS}.')
  if not 0.0 <= sparsity < 1.0:
    raise ValueError(f'sparsity must be in [0, 1), got {sparsity}.')
  if not kernel_shapes:
    raise ValueError('No prunable kernels were given.')
  for shape in kernel_shapes:
    if len(shape) < 2 or min(shape) < 1:
      raise ValueError(f'Kernel shape {tuple(shape)} is not a prunable kernel '
                       '(expected at least 2 positive dims).')


def _raw_scores(kernel_shapes, distribution) -> np.ndarray:
  """ER uses the last two (in, out) dims; ERK all dims of the kernel."""
  if distribution == 'er':
    return np.array([(s[-2] + s[-1]) / (s[-2] * s[-1]) for s in kernel_shapes])
  return np.array([np.sum(s) / np.prod(s, dtype=np.float64)
                   for s in kernel_shapes])


def _exact_total_rounding(real_counts: np.ndarray, sizes: np.ndarray,
                          total: int) -> list[int]:
  """Largest-remainder rounding: per layer floor or ceil, summing to `total`."""
  counts = np.minimum(np.floor(real_counts), sizes).astype(np.int64)
  short = int(total - counts.sum())
  order = np.argsort(-(real_counts - counts), kind='stable')
  for i in order:
    if short <= 0:
      break
    if counts[i] < sizes[i]:
      counts[i] += 1
      short -= 1
  return counts.tolist()


def layer_live_counts(kernel_shapes: Sequence[Sequence[int]], sparsity: float,
                      distribution: str = 'erk', *,
                      bias_sizes: Sequence[int] | None = None) -> list[int]:
  """Number of live (unmasked) weights per kernel; the canonical answer.

  Args:
    kernel_shapes: shapes of the prunable kernels, e.g. (5, 5, 1, 10) for a
      Conv2D, (5120, 50) for a Dense.
    sparsity: global sparsity S in [0, 1).
    distribution: one of `DISTRIBUTIONS`.
    bias_sizes: only for `feddst_erk`, the sizes of each layer's unmasked
      parameters, which the reference counts in the layer sizes.
  """
  _check(kernel_shapes, sparsity, distribution)
  sizes = np.array([int(np.prod(s)) for s in kernel_shapes], dtype=np.int64)
  if sparsity == 0.0:
    return sizes.tolist()
  if distribution == 'feddst_erk':
    return [max(1, int(round(d * n))) for d, n in zip(
        _feddst_erk_densities(kernel_shapes, sparsity, bias_sizes), sizes)]
  total = int(round((1.0 - sparsity) * sizes.sum()))
  if distribution == 'uniform':
    densities = np.full(len(sizes), 1.0 - sparsity)
  else:
    densities = _rigl_densities(_raw_scores(kernel_shapes, distribution),
                                sizes, sparsity)
  return _exact_total_rounding(densities * sizes, sizes, total)


def _rigl_densities(raw: np.ndarray, sizes: np.ndarray,
                    sparsity: float) -> np.ndarray:
  """density_i = eps * raw_i, with layers above 1 made dense (RigL)."""
  dense = np.zeros(len(sizes), dtype=bool)
  while True:
    live_budget = (1.0 - sparsity) * sizes.sum() - sizes[dense].sum()
    eps = live_budget / np.sum(raw[~dense] * sizes[~dense])
    over = (~dense) & (eps * raw > 1.0)
    if not over.any():
      return np.where(dense, 1.0, eps * raw)
    dense |= over


def _feddst_erk_densities(kernel_shapes, sparsity, bias_sizes) -> np.ndarray:
  sizes = np.array([np.prod(s, dtype=np.float64) for s in kernel_shapes])
  if bias_sizes is not None:
    if len(bias_sizes) != len(kernel_shapes):
      raise ValueError('bias_sizes must have one entry per kernel.')
    sizes = sizes + np.asarray(bias_sizes, dtype=np.float64)
  layer_sparsity = 1.0 - _raw_scores(kernel_shapes, 'erk')
  layer_sparsity *= sparsity * sizes.sum() / np.sum(layer_sparsity * sizes)
  return 1.0 - np.clip(layer_sparsity, 0.0, 1.0)


def layer_densities(kernel_shapes: Sequence[Sequence[int]], sparsity: float,
                    distribution: str = 'erk', *,
                    bias_sizes: Sequence[int] | None = None) -> list[float]:
  """Density of each kernel: `layer_live_counts` divided by the kernel size."""
  counts = layer_live_counts(kernel_shapes, sparsity, distribution,
                             bias_sizes=bias_sizes)
  return [c / float(np.prod(s)) for c, s in zip(counts, kernel_shapes)]
