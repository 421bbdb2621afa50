"""Per-client density budgets: parsing, assignment to clients, the sub-mask rule.

Real devices differ: a phone with little memory needs a sparser sub-model than
a tablet (FLASH's hetero setting, Babakniya et al., TMLR 2023). A budget list
such as `0.05:0.3,0.1:0.3,0.2:0.4` gives densities and the fraction of the
federation's clients at each.

* Assignment (`assign`): the fractions are rounded to client counts that sum
  to the number of clients (largest remainders; ties to the earlier group),
  and a permutation of the sorted client ids drawn from the seed hands them
  out. So a client's budget is fixed for the whole run and depends only on
  (budgets, client ids, seed).
* Sub-mask rule (`layer_counts`, `budget_masks`): a client with budget b
  receiving a global mask of density d (live weights / all prunable kernel
  weights) keeps, per layer l with live_l > 0 weights,
  k_l = min(live_l, max(1, floor(live_l · b / d))) of them: the k_l largest
  |w| among the live ones (ties to the lower flat index, as
  `sparsity.prune_by_magnitude`). Each layer shrinks by the same factor b / d,
  so the client's total is at most b·N, except that a layer never loses its
  last weight (a layer with no weights would cut the network). Runs apply
  it with `sparsity.budgets_tf`; the numpy functions here are its reference
  model, which the tests check it against. The budget travels to the client
  as float32; the model rounds it to float32 first so that the two agree to
  the weight.

Plain Python and numpy: the registry and the launcher's flag checks use it
before TensorFlow is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any, NamedTuple

import numpy as np

FLAG = 'client_density_budgets'
_SUM_TOLERANCE = 1e-6


class Budget(NamedTuple):
  density: float   # in (0, 1]: live weights / prunable kernel weights
  fraction: float  # of the federation's clients


class BudgetError(ValueError):
  """A budget list that cannot be used; the message names the option."""


def _parse_pairs(text: str, name: str) -> list[tuple[float, float]]:
  pairs = []
  for item in text.split(','):
    parts = item.strip().split(':')
    try:
      if len(parts) != 2:
        raise ValueError
      pairs.append((float(parts[0]), float(parts[1])))
    except ValueError:
      raise BudgetError(
          f'{name}: cannot read {item.strip()!r} in {text!r}; expected '
          'density:fraction pairs separated by commas, e.g. '
          '0.05:0.3,0.1:0.3,0.2:0.4.') from None
  return pairs


def parse(value: Any, *, name: str = FLAG) -> tuple[Budget, ...]:
  """Budgets from 'd:f,d:f,...' text (or (density, fraction) pairs).

  Refuses malformed text, densities outside (0, 1], fractions outside
  (0, 1], repeated densities and fractions that do not sum to 1. The
  result is sorted by density.
  """
  if isinstance(value, str):
    if not value.strip():
      raise BudgetError(f'{name} is empty; expected density:fraction pairs, '
                        'e.g. 0.05:0.3,0.1:0.3,0.2:0.4.')
    pairs = _parse_pairs(value, name)
  else:
    try:
      pairs = [(float(d), float(f)) for d, f in value]
    except (TypeError, ValueError):
      raise BudgetError(f'{name} must be text like 0.05:0.3,0.2:0.7 or '
                        f'(density, fraction) pairs, got {value!r}.') from None
    if not pairs:
      raise BudgetError(f'{name} holds no budget.')
  for density, fraction in pairs:
    if not (0.0 < density <= 1.0) or math.isnan(density):
      raise BudgetError(f'{name}: density {density:g} is outside (0, 1] '
                        '(a density is the share of the prunable weights a '
                        'client keeps).')
    if not (0.0 < fraction <= 1.0) or math.isnan(fraction):
      raise BudgetError(f'{name}: fraction {fraction:g} (of density '
                        f'{density:g}) is outside (0, 1].')
  densities = [d for d, _ in pairs]
  if len(set(densities)) != len(densities):
    raise BudgetError(f'{name}: density listed twice in {value!r}; give each '
                      'density once with its whole fraction.')
  total = sum(f for _, f in pairs)
  if abs(total - 1.0) > _SUM_TOLERANCE:
    raise BudgetError(f'{name}: the fractions sum to {total:g}, not 1 (every '
                      'client needs a budget).')
  return tuple(Budget(d, f) for d, f in sorted(pairs))


def check_sparsity(budgets: Sequence[Budget], sparsity: float, *,
                   name: str = FLAG, sparsity_name: str = 'sparsity') -> None:
  """Refuses budgets for a dense model (S = 0) or above the density 1 - S."""
  if sparsity <= 0.0:
    raise BudgetError(
        f'{name} needs a sparse model ({sparsity_name} > 0, an algorithm '
        f'with a mask); got {sparsity_name}={sparsity:g}.')
  density = 1.0 - sparsity
  over = [b.density for b in budgets if b.density > density + 1e-9]
  if over:
    raise BudgetError(
        f'{name}: budget {over[0]:g} is above the global density '
        f'1 - {sparsity_name} = {density:g}; a client can only keep a '
        'sub-mask of the global mask.')


def to_text(budgets: Sequence[Budget]) -> str:
  """The canonical 'd:f,...' form (what hparams.json records)."""
  return ','.join(f'{b.density:g}:{b.fraction:g}' for b in budgets)


def label(density: float) -> str:
  """The column label of a budget group, e.g. '0.05'."""
  return f'{density:g}'


def group_sizes(fractions: Sequence[float], num_clients: int) -> list[int]:
  """Client counts per group, summing to `num_clients` (largest remainders)."""
  if num_clients < 0:
    raise ValueError(f'num_clients must be >= 0, got {num_clients}.')
  quotas = [f * num_clients for f in fractions]
  sizes = [int(math.floor(q + 1e-9)) for q in quotas]
  rest = num_clients - sum(sizes)
  order = sorted(range(len(quotas)),
                 key=lambda i: (-(quotas[i] - sizes[i]), i))
  for i in order[:max(rest, 0)]:
    sizes[i] += 1
  return sizes


def assign(budgets: Sequence[Budget], client_ids: Sequence[str], *,
           seed: int) -> dict[str, float]:
  """{client id: density}: exact group sizes, clients permuted by `seed`."""
  ids = sorted(str(c) for c in client_ids)
  sizes = group_sizes([b.fraction for b in budgets], len(ids))
  order = np.random.default_rng([seed, 0x62756467]).permutation(len(ids))
  densities = np.repeat([b.density for b in budgets], sizes)
  return {ids[i]: float(d) for i, d in zip(order, densities)}


def as_float32(budget: float) -> float:
  """The budget as the client sees it (it travels as float32)."""
  return float(np.float32(budget))


def layer_counts(live_counts: Sequence[int], kernel_sizes: Sequence[int],
                 budget: float) -> np.ndarray:
  """k_l = min(live_l, max(1, floor(live_l · b · N / Σ live))) (0 if no live).

  The same float64 operations in the same order as `budgets_tf`.
  """
  live = np.asarray(live_counts, np.float64)
  total = float(np.sum(live))
  if total == 0:
    return np.zeros(len(live), np.int64)
  n = float(np.sum(np.asarray(kernel_sizes, np.float64)))
  b = np.float64(as_float32(budget))
  counts = np.floor(live * b * n / total)
  counts = np.minimum(live, np.maximum(counts, 1.0))
  return np.where(live > 0, counts, 0.0).astype(np.int64)


def top_magnitude_mask(weights: np.ndarray, mask: np.ndarray,
                       k: int) -> np.ndarray:
  """0/1 float32 mask: the k largest |w| among mask's live weights (ties to
  the lower flat index)."""
  flat_w = np.abs(np.asarray(weights, np.float32)).reshape(-1)
  live = np.flatnonzero(np.asarray(mask).reshape(-1) > 0)
  order = live[np.argsort(-flat_w[live], kind='stable')]
  out = np.zeros(flat_w.size, np.float32)
  out[order[:k]] = 1.0
  return out.reshape(np.shape(mask))


def budget_masks(kernels: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 budget: float) -> list[np.ndarray]:
  """The sub-masks of a client with `budget` (module doc's rule)."""
  live = [int(np.sum(np.asarray(m) > 0)) for m in masks]
  counts = layer_counts(live, [np.size(m) for m in masks], budget)
  return [top_magnitude_mask(w, m, int(k))
          for w, m, k in zip(kernels, masks, counts)]

