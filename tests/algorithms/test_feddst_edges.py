"""Edges the main tests do not reach: weight decay, server optimizer at S>0,
dropped clients that sent masks, a round where every client is dropped, the
FLOPs measurement."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst.sparse import codec
from test_dynamics_options import as_numpy, random_clients
from test_feddst_execution import DATA, common, loss_fn, model_fn


def test_weight_decay_matches_autodiff_of_l2_objective():
  lam, lr = 0.05, 0.1
  process = algorithms.build_weighted_fed_avg(model_fn, **common(
      client_weight_decay=lam,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(lr)))
  state = process.initialize()
  start = [np.asarray(w) for w in process.get_model_weights(state).trainable]
  state = process.next(state, DATA).state
  results, counts = [], []
  for ds in DATA:
    model = model_fn()
    model.set_weights(start)
    n = 0
    for batch in ds:
      with tf.GradientTape() as tape:
        loss = loss_fn()(batch['y'], model(batch['x'], training=True))
        loss += lam / 2 * tf.add_n([tf.reduce_sum(w ** 2)
                                    for w in model.trainable_weights])
      grads = tape.gradient(loss, model.trainable_weights)
      for w, g in zip(model.trainable_weights, grads):
        w.assign_sub(lr * g)
      n += int(batch['y'].shape[0])
    results.append(model.get_weights())
    counts.append(n)
  for i, got in enumerate(process.get_model_weights(state).trainable):
    want = sum(c * r[i] for c, r in zip(counts, results)) / sum(counts)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_server_momentum_at_s_above_zero_matches_numpy_and_stays_masked():
  server = tff.learning.optimizers.build_sgdm(1.0, momentum=0.9)
  kwargs = common(sparsity=0.6, sparsity_distribution='uniform',
                  readjustment_ratio=0.4, rounds_between_readjustments=1,
                  readjustment_end_round=10)
  plain = algorithms.build_feddst_components(model_fn, **kwargs)
  moving = algorithms.build_feddst_components(
      model_fn, server_optimizer_fn=server, **kwargs)
  layout = plain.layout
  weights, _, _, payloads, specs = random_clients(
      plain, np.random.default_rng(3))
  agg = plain.aggregator.next(plain.aggregator.initialize(), payloads,
                              [s[2] for s in specs]).result
  w = [np.asarray(t) for t in weights.trainable]
  accumulator = [np.zeros_like(t) for t in w]
  state = moving.finalizer.initialize()
  current = weights
  for _ in range(2):
    target = plain.finalizer.next(plain.finalizer.initialize(), current, agg)
    out = moving.finalizer.next(state, current, agg)
    state, current = out.state, out.result
    mean = [np.asarray(t) for t in target.result.trainable]
    masks = [np.asarray(target.result.non_trainable[i])
             for i in layout.mask_index]
    accumulator = [0.9 * a + (old - m)
                   for a, old, m in zip(accumulator, w, mean)]
    w = [old - a for old, a in zip(w, accumulator)]
    for i, m in zip(layout.kernel_index, masks):
      w[i] = w[i] * m
    for got, want in zip(out.result.trainable, w):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for i, m in zip(layout.kernel_index, masks):
      assert np.all(np.asarray(out.result.trainable[i])[m == 0] == 0)


def test_a_dropped_client_that_sent_a_mask_leaves_no_trace():
  parts = algorithms.build_feddst_components(model_fn, **common(
      sparsity=0.6, sparsity_distribution='uniform', readjustment_ratio=0.4,
      client_norm_bound=1e4))
  weights, _, _, payloads, specs = random_clients(
      parts, np.random.default_rng(4))
  weights_of = [s[2] for s in specs]
  # Client 1 sent a mask; give it an Inf. Client 2 sent one too; make it huge.
  bad = payloads[1]._replace(values=[np.where(np.arange(v.size) == 0, np.inf,
                                              v).astype(np.float32)
                                     for v in payloads[1].values])
  huge = payloads[2]._replace(values=[1e6 * v for v in payloads[2].values])
  agg = parts.aggregator.next(parts.aggregator.initialize(),
                              [payloads[0], bad, huge, payloads[3]], weights_of)
  assert agg.measurements['dropped_clients'] == 2
  clean = parts.aggregator.next(parts.aggregator.initialize(),
                                [payloads[0], payloads[3]],
                                [weights_of[0], weights_of[3]])
  for got, want in zip(tf.nest.flatten(agg.result._replace(
      clients=0, dropped_clients=0)), tf.nest.flatten(clean.result._replace(
          clients=0, dropped_clients=0))):
    np.testing.assert_array_equal(got, want)


def test_a_round_with_every_client_dropped_keeps_the_model():
  parts = algorithms.build_feddst_components(model_fn, **common(
      sparsity=0.6, readjustment_ratio=0.0, client_norm_bound=1e-3))
  weights, _, _, payloads, specs = random_clients(
      parts, np.random.default_rng(5))
  agg = parts.aggregator.next(parts.aggregator.initialize(), payloads,
                              [s[2] for s in specs])
  assert agg.measurements['dropped_clients'] == len(payloads)
  fin = parts.finalizer.next(parts.finalizer.initialize(), weights, agg.result)
  for got, want in zip(tf.nest.flatten(fin.result), tf.nest.flatten(weights)):
    np.testing.assert_array_equal(got, want)
  assert fin.measurements['mask_swaps'] == 0


def test_flops_measurement_is_the_hand_count():
  epochs = 2
  parts = algorithms.build_feddst_components(model_fn, **common(
      sparsity=0.5, sparsity_distribution='uniform', readjustment_ratio=0.0,
      client_epochs=epochs))
  weights = parts.initial_model_weights_fn()
  payload = as_numpy(codec.encode(*parts.layout.split(
      list(weights.trainable), list(weights.non_trainable)), send_masks=True))
  out = parts.client_work.next(parts.client_work.initialize(),
                               [payload] * 2, DATA[:2])
  examples = epochs * sum(int(b['y'].shape[0]) for ds in DATA[:2] for b in ds)
  # mlp on 6x6x1: Dense 36->12 and 12->4, one position each; 2 FLOPs per
  # multiply-add forward, x3 for forward + backward.
  dense_macs = 36 * 12 + 12 * 4
  live_macs = 36 * 12 // 2 + 12 * 4 // 2
  stats = out.measurements['round']
  assert stats['client_dense_flops'] == pytest.approx(
      3 * 2 * dense_macs * examples)
  assert stats['client_flops'] == pytest.approx(3 * 2 * live_macs * examples)
