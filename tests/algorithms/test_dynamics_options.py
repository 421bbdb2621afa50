"""The dynamic-mask options against numpy/eager models of their rules.

readjust_after_epoch, remember_old, upload_dtype, final_sparsity, consensus
regrowth, and the mask-dynamics measurements.
"""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import sparsity as sparsity_lib
from tff_feddst.sparse import codec
from test_feddst_execution import (DATA, common, kernels_and_masks, loss_fn,
                                   model_fn, np_readjust, run_rounds)


def as_numpy(payload):
  return tf.nest.map_structure(lambda t: np.asarray(t), payload)


def initial_payload(parts):
  weights = parts.initial_model_weights_fn()
  trainable = [np.asarray(w) for w in weights.trainable]
  non_trainable = [np.asarray(w) for w in weights.non_trainable]
  payload = as_numpy(codec.encode(*parts.layout.split(trainable, non_trainable),
                                  send_masks=True))
  return trainable, non_trainable, payload


# --- readjust_after_epoch -------------------------------------------------


def eager_client(trainable, masks, data, *, lr, epochs, after_epoch, fraction,
                 kernel_index):
  """Plain SGD with re-masking; after epoch k np_readjust on the last batch's
  gradient, then the remaining epochs on the new mask."""
  model = model_fn()
  for v, w in zip(model.trainable_weights, trainable):
    v.assign(w)
  masks = dict(masks)
  loss = loss_fn()
  last = None
  for epoch in range(1, epochs + 1):
    for batch in data:
      with tf.GradientTape() as tape:
        value = loss(batch['y'], model(batch['x'], training=True))
      grads = tape.gradient(value, model.trainable_weights)
      last = [grads[i].numpy() for i in kernel_index]
      for i, (v, g) in enumerate(zip(model.trainable_weights, grads)):
        v.assign((v - lr * g) * masks[i] if i in masks else v - lr * g)
    if epoch == after_epoch:
      for n, i in enumerate(kernel_index):
        w = model.trainable_weights[i].numpy()
        new_mask, new_w, _ = np_readjust(w, last[n], masks[i], fraction)
        masks[i] = new_mask.reshape(w.shape).astype(np.float32)
        model.trainable_weights[i].assign(new_w.reshape(w.shape))
  return [v.numpy() for v in model.trainable_weights], masks


@pytest.mark.parametrize('after_epoch', [1, 2])
def test_readjust_after_epoch_matches_eager_reference(after_epoch):
  alpha, lr, epochs, data = 0.3, 0.1, 3, DATA[1]
  parts = algorithms.build_feddst_components(model_fn, **common(
      sparsity=0.7, readjustment_ratio=alpha, rounds_between_readjustments=1,
      readjustment_end_round=10, client_epochs=epochs,
      readjust_after_epoch=after_epoch,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(lr)))
  layout = parts.layout
  trainable, non_trainable, payload = initial_payload(parts)
  state = parts.client_work.initialize()
  state['round_num'] = 1
  out = parts.client_work.next(state, [payload], [data])
  fraction = alpha / 2 * (1 + math.cos(math.pi / 10))
  masks = {i: non_trainable[j]
           for i, j in zip(layout.kernel_index, layout.mask_index)}
  want_w, want_masks = eager_client(
      trainable, masks, data, lr=lr, epochs=epochs, after_epoch=after_epoch,
      fraction=fraction, kernel_index=layout.kernel_index)
  update = out.result[0].update
  trained_regrown = 0
  for n, i in enumerate(layout.kernel_index):
    size = want_w[i].size
    got_mask = codec.unpack_bits(update.masks[n], size).numpy()
    np.testing.assert_array_equal(got_mask, want_masks[i].ravel() > 0)
    flat = want_w[i].ravel()
    np.testing.assert_allclose(update.values[n], flat[got_mask], atol=1e-5)
    regrown = got_mask & (masks[i].ravel() == 0)
    trained_regrown += int(np.sum(flat[regrown] != 0))
  if after_epoch < epochs:  # Regrown weights arrive trained.
    assert trained_regrown > 0
  else:
    assert trained_regrown == 0


def test_readjust_after_last_epoch_is_the_default():
  kwargs = common(sparsity=0.7, readjustment_ratio=0.3,
                  rounds_between_readjustments=1, readjustment_end_round=10,
                  client_epochs=2)
  default = algorithms.build_weighted_feddst(model_fn, **kwargs)
  explicit = algorithms.build_weighted_feddst(model_fn, readjust_after_epoch=2,
                                              **kwargs)
  a, _ = run_rounds(default, default.initialize(), 2)
  b, _ = run_rounds(explicit, explicit.initialize(), 2)
  for x, y in zip(default.get_model_weights(a).trainable,
                  explicit.get_model_weights(b).trainable):
    np.testing.assert_array_equal(x, y)


# --- server rules: remember_old and consensus regrowth ----------------------


def np_next_mask(prev_mask, clients, live_count, *, min_votes=0,
                 remember_old=False, prev_kernel=None, quota=0):
  """numpy model of `sparsity.next_global_mask` from raw client uploads.

  `clients`: [(values, mask or None (= prev_mask), weight)].
  """
  size = prev_mask.size
  prev = prev_mask.ravel() > 0
  total, votes_w, votes_c = np.zeros(size), np.zeros(size), np.zeros(size)
  for values, mask, weight in clients:
    mask = prev.astype(float) if mask is None else mask.ravel()
    dense = np.zeros(size)
    dense[mask > 0] = values
    total += weight * dense
    votes_w += weight * mask
    votes_c += mask
  mean = np.divide(total, votes_w, out=np.zeros(size), where=votes_w > 0)
  score, counts = mean, votes_c
  if remember_old:
    all_w = sum(c[2] for c in clients)
    # Each client that does not keep a weight of the previous mask adds the
    # server's previous value with its weight.
    remembered = total + prev_kernel.ravel() * prev * (all_w - votes_w)
    score = remembered / all_w
    counts = np.where(prev, len(clients), votes_c)
  union = counts >= max(min_votes, 1)
  candidates = ~prev & (votes_c > 0)
  q = min(quota, int(candidates.sum()), live_count)
  idx = np.arange(size)
  grow_order = np.lexsort((idx, -votes_w, -np.abs(mean), -votes_c,
                           -candidates.astype(float)))
  grown = np.zeros(size, bool)
  grown[grow_order[:q]] = True
  order = np.lexsort((idx, -votes_w, -np.abs(score), -union.astype(float),
                      -grown.astype(float)))
  new_mask = np.zeros(size)
  new_mask[order[:live_count]] = 1
  return new_mask.reshape(prev_mask.shape), mean.reshape(prev_mask.shape)


def random_clients(parts, rng, weights=(3.0, 5.0, 2.0, 4.0)):
  """Payloads: client 0 keeps the global mask, the others readjusted."""
  layout = parts.layout
  w = parts.initial_model_weights_fn()
  kernels, masks, dense = layout.split(list(w.trainable), list(w.non_trainable))
  payloads, specs = [], []
  for c, weight in enumerate(weights):
    c_kernels, c_masks = [], []
    for m, n in zip(masks, layout.live_counts):
      m = np.asarray(m)
      if c == 0:
        new_mask = m.copy()
      else:
        new_mask = np.zeros(m.size, np.float32)
        keep = rng.choice(np.flatnonzero(m.ravel()), n - n // 3, replace=False)
        # Few regrowth candidates, so that votes pile up on some.
        pool = np.flatnonzero(m.ravel() == 0)[:max(n // 2, 1)]
        grow = rng.choice(pool, n // 3, replace=False)
        new_mask[np.concatenate([keep, grow])] = 1
        new_mask = new_mask.reshape(m.shape)
      c_kernels.append((rng.normal(size=m.shape) * new_mask).astype(np.float32))
      c_masks.append(new_mask)
    c_dense = [rng.normal(size=np.shape(d)).astype(np.float32) for d in dense]
    payloads.append(as_numpy(codec.encode(c_kernels, c_masks, c_dense,
                                          send_masks=c > 0)))
    specs.append((c_kernels, c_masks, weight, c > 0))
  return w, kernels, masks, payloads, specs


def server_round(parts, seed: int, round_num: int = 0):
  """Random clients through the aggregator and the finalizer (one round).

  Returns (the clients from `random_clients`, the aggregator's and the
  finalizer's outputs, the new kernels and masks).
  """
  clients = random_clients(parts, np.random.default_rng(seed))
  weights, _, _, payloads, specs = clients
  agg = parts.aggregator.next(parts.aggregator.initialize(), payloads,
                              [s[2] for s in specs])
  state = parts.finalizer.initialize()
  state['round_num'] = round_num
  fin = parts.finalizer.next(state, weights, agg.result)
  new_kernels, new_masks, _ = parts.layout.split(
      [np.asarray(t) for t in fin.result.trainable],
      [np.asarray(t) for t in fin.result.non_trainable])
  return clients, agg, fin, new_kernels, new_masks


@pytest.mark.parametrize('remember_old,consensus,round_num', [
    (True, False, 1), (False, True, 1), (True, True, 1), (False, True, 2)])
def test_server_mask_rules_match_numpy(remember_old, consensus, round_num):
  alpha, every, end = 0.4, 1, 10
  parts = algorithms.build_feddst_components(model_fn, **common(
      sparsity=0.6, sparsity_distribution='uniform', readjustment_ratio=alpha,
      rounds_between_readjustments=every, readjustment_end_round=end,
      remember_old=remember_old, consensus_regrowth=consensus))
  layout = parts.layout
  (_, kernels, masks, _, specs), _, fin, new_kernels, new_masks = (
      server_round(parts, seed=11, round_num=round_num))
  fraction = alpha / 2 * (1 + math.cos(math.pi * round_num / end))
  grown_total = 0
  for i, (k, m, n) in enumerate(zip(kernels, masks, layout.live_counts)):
    m = np.asarray(m)
    clients = [(c_k[i].ravel()[c_m[i].ravel() > 0], c_m[i] if sent else None,
                weight) for c_k, c_m, weight, sent in specs]
    quota = (math.floor(np.float32(fraction) * np.float32(m.sum()))
             if consensus else 0)
    want_mask, mean = np_next_mask(m, clients, n, remember_old=remember_old,
                                   prev_kernel=np.asarray(k), quota=quota)
    np.testing.assert_array_equal(new_masks[i], want_mask)
    # The values stay the masked mean, whatever the ranking.
    np.testing.assert_allclose(new_kernels[i], mean * want_mask, rtol=1e-5,
                               atol=1e-6)
    grown_total += int(np.sum((want_mask > 0) & (m == 0)))
  if consensus:
    assert grown_total > 0


def test_consensus_regrowth_turns_the_mask_over_where_feddst_does_not():
  kwargs = common(sparsity=0.8, readjustment_ratio=0.3,
                  rounds_between_readjustments=2, readjustment_end_round=6)
  turnover = {}
  for consensus in (False, True):
    process = algorithms.build_weighted_feddst(
        model_fn, consensus_regrowth=consensus, **kwargs)
    _, outs = run_rounds(process, process.initialize(), 4)
    turnover[consensus] = outs[-1].metrics['finalizer']['mask_turnover']
  assert turnover[True] > turnover[False]
  assert turnover[True] > 0.05


# --- upload_dtype -----------------------------------------------------------


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_16_bit_uploads_halve_the_value_bytes(dtype):
  tf_dtype = codec.upload_dtype(dtype)
  kwargs = common(sparsity=0.8, readjustment_ratio=0.0)
  parts32 = algorithms.build_feddst_components(model_fn, **kwargs)
  parts16 = algorithms.build_feddst_components(model_fn, upload_dtype=dtype,
                                               **kwargs)
  layout = parts16.layout
  _, _, payload = initial_payload(parts16)
  state = parts16.client_work.initialize()
  out32 = parts32.client_work.next(state, [payload], DATA[:1])
  out16 = parts16.client_work.next(state, [payload], DATA[:1])
  up32, up16 = out32.result[0].update, out16.result[0].update
  live = sum(layout.live_counts)
  dense = sum(int(np.prod(s.shape)) for s in layout.dense_specs)
  nbytes = sum(np.asarray(t).nbytes for t in tf.nest.flatten(up16))
  assert nbytes == 2 * live + 2 * dense
  assert out16.measurements['round']['uplink_bytes'] == nbytes
  assert out32.measurements['round']['uplink_bytes'] == 4 * live + 4 * dense
  # The 16-bit values are the float32 ones rounded to the 16-bit type.
  for a, b in zip(up32.values + up32.dense, up16.values + up16.dense):
    assert np.asarray(b).dtype == tf_dtype.as_numpy_dtype
    np.testing.assert_array_equal(
        np.asarray(b), tf.cast(np.asarray(a), tf_dtype).numpy())
  # The server sums them in float32: a one-client round equals the upload.
  agg = parts16.aggregator.next(parts16.aggregator.initialize(), [up16], [1.0])
  np.testing.assert_allclose(agg.result.fixed_sums[0],
                             tf.cast(up16.values[0], tf.float32).numpy())
  assert agg.result.fixed_sums[0].dtype == np.float32


# --- final_sparsity ---------------------------------------------------------


def test_final_sparsity_moves_linearly_with_exact_densities():
  start, final, end = 0.5, 0.8, 4
  kwargs = common(sparsity=start, final_sparsity=final, readjustment_ratio=0.2,
                  rounds_between_readjustments=1, readjustment_end_round=end,
                  sparsity_distribution='erk')
  layout = algorithms.build_feddst_components(model_fn, **kwargs).layout
  process = algorithms.build_weighted_feddst(model_fn, **kwargs)
  state = process.initialize()
  shapes = layout.kernel_shapes
  for r in range(6):
    state, _ = run_rounds(process, state, 1)
    kernels, masks = kernels_and_masks(layout, process, state)
    s = start + (final - start) * min(r / end, 1.0)
    want = sparsity_lib.layer_live_counts(shapes, s, 'erk')
    assert [int(m.sum()) for m in masks] == list(want), r
    for k, m in zip(kernels, masks):
      assert np.all(k[m == 0] == 0)


@pytest.mark.parametrize('kwargs,name', [
    (dict(readjust_after_epoch=0), 'readjust_after_epoch'),
    (dict(readjust_after_epoch=3, client_epochs=2), 'readjust_after_epoch'),
    (dict(final_sparsity=1.0), 'final_sparsity'),
    (dict(final_sparsity=-0.1), 'final_sparsity'),
    (dict(final_sparsity=0.5), 'final_sparsity'),  # below sparsity=0.8
    (dict(upload_dtype='int8'), 'upload_dtype'),
])
def test_bad_option_values_are_refused_by_name(kwargs, name):
  args = common(sparsity=0.8, readjustment_ratio=0.1)
  args.update(kwargs)
  with pytest.raises(ValueError, match=name):
    algorithms.build_feddst_components(model_fn, **args)


# --- mask dynamics ----------------------------------------------------------


def exact_mean_jaccard(masks):
  pairs = list(itertools.combinations(masks, 2))
  return np.mean([np.sum(a & b) / np.sum(a | b) for a, b in pairs])


def test_mask_dynamics_measurements():
  parts = algorithms.build_feddst_components(model_fn, **common(
      sparsity=0.6, sparsity_distribution='uniform', readjustment_ratio=0.4,
      rounds_between_readjustments=1, readjustment_end_round=10,
      consensus_regrowth=True))
  layout = parts.layout
  (_, _, masks, _, specs), agg, fin, _, new_masks = server_round(parts, seed=5)
  metrics = fin.measurements
  old = np.concatenate([np.asarray(m).ravel() for m in masks]) > 0
  new = np.concatenate([m.ravel() for m in new_masks]) > 0
  assert metrics['mask_swaps'] == np.sum(new & ~old)
  assert metrics['mask_changed_fraction'] == pytest.approx(
      np.sum(new & ~old) / new.sum())
  assert metrics['mask_turnover'] == pytest.approx(
      np.sum(new & ~old) / new.sum())
  client_masks = [np.concatenate([c_m[i].ravel() for i in range(len(masks))])
                  > 0 for _, c_m, _, _ in specs]
  n = old.sum()
  overlaps = [np.sum(a & b) for a, b in itertools.combinations(client_masks, 2)]
  mean_overlap = np.mean(overlaps)
  assert metrics['client_mask_jaccard'] == pytest.approx(
      mean_overlap / (2 * n - mean_overlap), rel=1e-5)
  assert metrics['client_mask_jaccard'] <= exact_mean_jaccard(client_masks)
  # Cumulative turnover is measured against the mask of round 0.
  state = fin.state
  fin2 = parts.finalizer.next(state, fin.result, agg.result)
  _, masks2, _ = layout.split(
      [np.asarray(t) for t in fin2.result.trainable],
      [np.asarray(t) for t in fin2.result.non_trainable])
  new2 = np.concatenate([m.ravel() for m in masks2]) > 0
  assert fin2.measurements['mask_turnover'] == pytest.approx(
      np.sum(new2 & ~old) / new2.sum())
