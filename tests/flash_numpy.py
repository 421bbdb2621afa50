"""numpy models of FLASH's rules (docs/notes/field_methods.md §2.8, and our
documented exact-count client event), shared by the FLASH tests."""

import math

import numpy as np


def np_flash_layer_profile(client_masks, d):
  """§2.8: stage 1 -> per-layer densities d_l = min(r ρ̄_l, 1)."""
  n = np.array([m.size for m in client_masks[0]], float)
  rho = np.mean([[m.mean() for m in cm] for cm in client_masks], axis=0)
  r = d * n.sum() / (rho * n).sum()
  return np.minimum(rho * r, 1.0)


def np_largest_remainder(real, total, caps):
  counts = np.minimum(np.floor(real), caps).astype(np.int64)
  short = int(total - counts.sum())
  order = np.lexsort((np.arange(real.size), -(real - counts)))
  for i in order:
    if short <= 0:
      break
    if counts[i] < caps[i]:
      counts[i] += 1
      short -= 1
  return counts


def np_profile_counts(client_masks, d):
  n = np.array([m.size for m in client_masks[0]], float)
  want = np_flash_layer_profile(client_masks, d) * n
  return np_largest_remainder(want, math.floor(want.sum() + 1e-9), n)


def np_server_mask(w_agg, budgets_b, d):
  """§2.8 `flash_server_mask` (FLASH's get_next_round_mask)."""
  b = np.asarray(budgets_b, float)
  n_total = sum(w.size for w in w_agg)
  ratio = min(1.0, d * n_total / b.sum())
  out = []
  for w, bl in zip(w_agg, b):
    k = int(bl * ratio)
    m = np.zeros(w.size, bool)
    m[np.argsort(-np.abs(w.ravel()), kind='stable')[:k]] = True
    out.append(m.reshape(w.shape))
  return out


def np_redistribute(total, shares, caps):
  """Water-filling of `total` ∝ shares under caps, then largest remainders."""
  shares = np.asarray(shares, float)
  caps = np.asarray(caps, float)
  total = min(total, caps.sum())
  alloc = np.zeros(len(shares))
  active = [i for i in range(len(shares)) if caps[i] > 0]
  rem = total
  while active:
    s = shares[active]
    if s.sum() <= 0:
      s = caps[active]
    want = rem * s / s.sum()
    capped = [i for i, x in zip(active, want) if x >= caps[i]]
    if not capped:
      alloc[active] = want
      break
    for i in capped:
      alloc[i] = caps[i]
      rem -= caps[i]
      active.remove(i)
  return np_largest_remainder(alloc, round(total), caps)


def np_event_counts(kernels, masks, p, limits=None):
  """(pruned r_l, kept masks, regrowth g_l) of one client event."""
  live = [int(m.sum()) for m in masks]
  pruned = [min(math.ceil(np.float64(np.float32(p)) * n), n) for n in live]
  shares = [np.abs(k[m > 0]).mean() if n else 0.0
            for k, m, n in zip(kernels, masks, live)]
  kept = []
  for k, m, n, r in zip(kernels, masks, live, pruned):
    flat = np.zeros(m.size, bool)
    idx = np.flatnonzero(m.ravel() > 0)
    order = idx[np.lexsort((idx, -np.abs(k.ravel()[idx])))]
    flat[order[:n - r]] = True
    kept.append(flat.reshape(m.shape))
  caps = [m.size - (n - r) for m, n, r in zip(masks, live, pruned)]
  if limits is not None:
    caps = [min(c, max(lim - (n - r), 0))
            for c, lim, n, r in zip(caps, limits, live, pruned)]
  return pruned, kept, np_redistribute(sum(pruned), shares, caps)


def np_fma_mean(ws, masks):
  """§2.8 `flash_aggregate` mode 1: per entry the mean over the clients whose
  mask holds it (0 where none does); unweighted, as FLASH."""
  out = []
  for t, ms in zip(zip(*ws), zip(*masks)):
    cnt = np.sum(ms, axis=0)
    out.append(np.where(cnt > 0, np.sum(t, axis=0) / np.maximum(cnt, 1), 0.0))
  return out
