"""FLASH's mask rules as plain TF functions (no TFF).

Babakniya, Kundu, Prakash, Niu, Avestimehr. "Revisiting Sparsity Hunting in
Federated Learning: Why does Sparsity Consensus Matter?" TMLR 2023
(arXiv 2208.13092; code github.com/SaraBabakN/flash_fl, read for
docs/notes/field_methods.md §2). Used by `algorithms.flash`.

* Client DST event (`client_readjust`; FLASH's `core.Masking`): per layer
  prune r_l = ⌈p·nnz_l⌉ smallest-|w| live weights; spread the regrowth
  budget R = Σ r_l over the layers in proportion to their mean |w| over live
  weights (measured before pruning, as FLASH's `gather_statistics`), each
  layer capped at its dead count (`redistribute`); regrow *uniformly at
  random* among each layer's dead weights (`random_regrow`). Regrown weights
  start at exactly 0. Ours vs FLASH's code: exact counts — the shares are
  water-filled under the caps and rounded by largest remainders so that
  Σ g_l = R, and the draw is a seeded choice without replacement, where FLASH
  takes ⌈share·R⌉ per layer (capped at 0.99·dead) and a Bernoulli draw, right
  only in expectation; a re-drawn just-pruned weight restarts at 0 (FLASH's
  keeps its old value); FLASH's special case for layers denser than 80%
  (p_l = min(sparsity_l, p)) is left out. With `limits` (per-client density
  budgets) a layer may hold at most limit_l weights, so a budgeted client
  keeps its per-layer counts and only moves weights within each layer.
* Stage 1 (`layer_profile_counts`): from the mean live count per layer b_l of
  the stage-1 clients' masks, ρ̄_l = b_l / n_l, r = d·N / Σ ρ̄_l n_l and
  d_l = min(r·ρ̄_l, 1); the new mask is a fresh uniform random mask with
  d_l·n_l live weights per layer (`random_mask`), rounded by largest
  remainders to a total of ⌊Σ d_l n_l⌋ ≤ d·N.
* JMWST server mask (`server_layer_counts`, `top_k_mask`): per layer the
  k_l = ⌊b_l · min(1, d·N / Σ_l b_l)⌋ largest |w̄| of the aggregate (FLASH's
  `get_next_round_mask`).
* Prune rate (`ClientDST`, `client_schedule`, `event_rate`): FLASH decays p
  linearly from p_0 to 0 over the local steps of each round, so its event
  after local epoch e of E comes at p_0·(1 − e/E) (E = 1: one event
  mid-epoch at ≈ p_0/2). Ours: p_0 = α_r of our round schedule
  (`schedules.readjustment_fraction` with α = the FLASH prune rate, FLASH's
  own being 'constant' for the whole run), events after epochs 1..E−1 at
  α_r·(1 − e/E); with E = 1 one event after the epoch at α_r/2.

Deterministic: ties go to the lower flat index, random draws use stateless
seeds.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import tensorflow as tf

from tff_feddst.sparsity import masks as masks_lib
from tff_feddst.sparsity import schedules

# Rounds for "never ends" (readjustment_end_round None).
_NEVER = 2 ** 30


@dataclasses.dataclass(frozen=True)
class ClientDST:
  """FLASH's client DST in our client work (see the module doc).

  Attributes:
    rate: p_0, the prune rate at the start of a round (FLASH: 0.25).
    schedule: decay of p_0 over rounds ('constant' is FLASH's).
    end_round: no client DST from this round on (None: never ends).
    stage_one_only: DST only in round 0 (SPDST: the mask is static after
      stage 1); otherwise in every round while the rate is > 0 (JMWST).
    seed: base seed of the random regrowth.
  """
  rate: float = 0.25
  schedule: str = 'constant'
  end_round: int | None = None
  stage_one_only: bool = False
  seed: int = 0


def client_schedule(round_num, config: ClientDST):
  """(p_0 of this round as float32, whether clients run DST events)."""
  end = _NEVER if config.end_round is None else config.end_round
  rate = tf.cast(schedules.readjustment_fraction(
      round_num, config.rate, end, config.schedule), tf.float32)
  if config.stage_one_only:
    active = tf.equal(tf.cast(round_num, tf.int64), 0)
  else:
    active = rate > 0.0
  return rate, tf.logical_and(active, rate > 0.0)


def event_rate(rate, event, epochs: int):
  """p of the event after local epoch `event` (1-based) of `epochs`."""
  if epochs == 1:
    return tf.cast(rate, tf.float32) / 2.0
  return tf.cast(rate, tf.float32) * (
      1.0 - tf.cast(event, tf.float32) / float(epochs))


def prune_count(num_live, rate):
  """r = min(⌈p · nnz⌉, nnz) (int32), in float64."""
  n = tf.cast(num_live, tf.float64)
  r = tf.math.ceil(tf.cast(rate, tf.float64) * n)
  return tf.cast(tf.minimum(tf.maximum(r, 0.0), n), tf.int32)


def growth_share(kernel, mask):
  """Mean |w| over the live weights (0 for a layer with none), float64."""
  live = tf.cast(mask > 0, tf.float64)
  total = tf.reduce_sum(tf.abs(tf.cast(kernel, tf.float64)) * live)
  return tf.math.divide_no_nan(total, tf.reduce_sum(live))


def _largest_remainder(alloc, total, caps):
  """Integers per entry: floor(alloc) plus one for the largest fractional
  parts (ties to the lower index; only below the cap) up to `total`."""
  base = tf.minimum(tf.floor(alloc), caps)
  extra = tf.cast(total, tf.int32) - tf.cast(tf.reduce_sum(base), tf.int32)
  room = base < caps
  score = tf.where(room, alloc - base, -1.0)
  order = tf.argsort(score, direction='DESCENDING', stable=True)
  rank = tf.scatter_nd(order[:, None], tf.range(tf.size(order)),
                       tf.shape(order))
  plus = tf.logical_and(room, rank < extra)
  return tf.cast(base, tf.int32) + tf.cast(plus, tf.int32)


def redistribute(total, shares, caps):
  """Integer regrowth per layer: `total` spread ∝ `shares` under `caps`.

  Water-filling: a layer whose proportional share reaches its cap gets the
  cap, and the rest is spread again over the others; then largest-remainder
  rounding, so the counts sum to min(total, Σ caps) exactly and never exceed
  a cap. If no layer with room has a positive share, the rest is spread ∝
  the remaining room. Returns int32[L].
  """
  shares = tf.cast(tf.stack(list(shares)), tf.float64)
  caps = tf.maximum(tf.cast(tf.stack(list(caps)), tf.float64), 0.0)
  num_layers = int(shares.shape[0])
  total = tf.minimum(tf.cast(total, tf.float64), tf.reduce_sum(caps))
  alloc = tf.zeros_like(shares)
  free = caps > 0
  done = tf.constant(False)
  remaining = total
  for _ in range(num_layers + 1):  # Each unfinished pass caps >= 1 layer.
    weight = tf.where(free, shares, 0.0)
    weight = tf.where(tf.reduce_sum(weight) > 0, weight,
                      tf.where(free, caps, 0.0))
    want = remaining * tf.math.divide_no_nan(weight, tf.reduce_sum(weight))
    over = tf.logical_and(tf.logical_and(free, want >= caps),
                          tf.logical_not(done))
    any_over = tf.reduce_any(over)
    alloc = tf.where(over, caps, alloc)
    remaining -= tf.reduce_sum(tf.where(over, caps, 0.0))
    free = tf.logical_and(free, tf.logical_not(over))
    finish = tf.logical_and(tf.logical_not(done), tf.logical_not(any_over))
    alloc = tf.where(tf.logical_and(finish, free), want, alloc)
    done = tf.logical_or(done, finish)
  return _largest_remainder(alloc, tf.round(total), caps)


def _flat_scatter_ones(indices, like):
  flat = tf.scatter_nd(tf.expand_dims(indices, 1),
                       tf.ones_like(indices, dtype=like.dtype),
                       tf.shape(tf.reshape(like, [-1]), out_type=indices.dtype))
  return tf.reshape(flat, tf.shape(like))


def random_regrow(mask, num_grow, seed):
  """`mask` plus `num_grow` dead weights drawn uniformly without replacement
  (the top of i.i.d. uniform scores among the dead; `seed`: int64[2])."""
  dead = tf.reshape(mask <= 0, [-1])
  scores = tf.random.stateless_uniform(tf.shape(dead), seed, dtype=tf.float32)
  scores = tf.where(dead, scores, -1.0)
  grow = tf.math.top_k(scores, k=tf.cast(num_grow, tf.int32)).indices
  return mask + _flat_scatter_ones(grow, mask)


def random_mask(shape, count, seed):
  """0/1 float32 mask of `shape` with exactly `count` live weights, uniform."""
  return random_regrow(tf.zeros(shape, tf.float32), count, seed)


def layer_seed(seed, layer: int):
  seed = tf.cast(seed, tf.int64)
  return tf.stack([seed[0], seed[1] * 1009 + layer])


def event_seed(base_seed: int, kernels, event):
  """Seed of one client's DST event: the base seed, and a fingerprint of the
  client's weights (its data made them; clients differ) mixed with the event
  number. Deterministic, so a resumed run draws the same."""
  total = tf.add_n([tf.reduce_sum(tf.cast(k, tf.float32)) for k in kernels])
  fingerprint = tf.cast(tf.bitcast(total, tf.int32), tf.int64)
  return tf.stack([tf.constant(base_seed, tf.int64),
                   fingerprint * 131 + tf.cast(event, tf.int64)])


class ClientReadjustment(NamedTuple):
  masks: list      # new 0/1 masks
  kernels: list    # kernels * kept masks (regrown weights exactly 0)
  pruned: tf.Tensor  # int32[L]
  grown: tf.Tensor   # int32[L]


def client_readjust(kernels, masks, rate, seed, *, limits=None
                    ) -> ClientReadjustment:
  """One FLASH client DST event over all prunable layers (module doc).

  Args:
    kernels, masks: per layer (masked weights are 0).
    rate: p of this event.
    seed: int64[2] (`event_seed`).
    limits: optional per-layer maxima of live weights (a client's budget
      counts); default the layer sizes.
  """
  live = [tf.reduce_sum(tf.cast(m > 0, tf.int32)) for m in masks]
  pruned = [prune_count(n, rate) for n in live]
  shares = [growth_share(k, m) for k, m in zip(kernels, masks)]
  kept = [masks_lib.prune_by_magnitude(k, m, n - r)
          for k, m, n, r in zip(kernels, masks, live, pruned)]
  caps = []
  for m, n, r, i in zip(masks, live, pruned, range(len(masks))):
    room = tf.size(m) - (n - r)
    if limits is not None:
      room = tf.minimum(room, tf.maximum(
          tf.cast(limits[i], tf.int32) - (n - r), 0))
    caps.append(room)
  grown = redistribute(tf.add_n(pruned), shares, caps)
  new_masks = [random_regrow(k, grown[i], layer_seed(seed, i))
               for i, k in enumerate(kept)]
  new_kernels = [w * k for w, k in zip(kernels, kept)]
  return ClientReadjustment(new_masks, new_kernels, tf.stack(pruned), grown)


def apportion(targets, total, caps):
  """int32 counts: `targets` (float) rounded by largest remainders to `total`."""
  return _largest_remainder(tf.cast(targets, tf.float64), total,
                            tf.cast(caps, tf.float64))


def layer_profile_counts(mean_live, sizes, density: float):
  """Stage 1: live counts per layer from the clients' mean live counts b_l.

  d_l = min(r · b_l / n_l, 1) with r = d·N / Σ b_l (FLASH's `get_avg_mask`),
  rounded by largest remainders to ⌊Σ d_l n_l⌋. With Σ b_l = 0: uniform d.
  Returns int32[L].
  """
  b = tf.cast(tf.stack(list(mean_live)), tf.float64)
  n = tf.constant([float(s) for s in sizes], tf.float64)
  target = float(density) * float(sum(sizes))
  rho = tf.where(tf.reduce_sum(b) > 0, b / n, tf.ones_like(n))
  r = target / tf.reduce_sum(rho * n)
  d = tf.minimum(r * rho, 1.0)
  want = d * n
  total = tf.floor(tf.reduce_sum(want) + 1e-9)
  return apportion(want, total, n)


def server_layer_counts(budgets_b, target_live: float):
  """k_l = ⌊b_l · min(1, target / Σ b)⌋ (int32[L]); `target` = d·N."""
  b = tf.cast(tf.stack(list(budgets_b)), tf.float64)
  total = tf.reduce_sum(b)
  ratio = tf.minimum(float(target_live) / tf.maximum(total, 1e-300), 1.0)
  ratio = tf.where(total > 0, ratio, 1.0)
  return tf.cast(tf.floor(b * ratio), tf.int32)


def top_k_mask(values, k):
  """0/1 mask of the k largest |values| (ties to the lower flat index)."""
  return masks_lib.prune_by_magnitude(values, tf.ones_like(values), k)
