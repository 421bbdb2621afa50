"""FedDST rounds against independent truth: stock TFF, numpy, closed forms."""

import collections
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import data as data_lib
from tff_feddst import models
from tff_feddst.sparse import codec

NUM_CLASSES = 4


def model_fn():
  return models.mlp((6, 6, 1), NUM_CLASSES, hidden=12)


def loss_fn():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def metrics_fn():
  return [tf.keras.metrics.SparseCategoricalAccuracy()]


def client_datasets(num_clients=4, seed=0, sizes=(24, 40, 16, 32, 28, 20)):
  rng = np.random.default_rng(seed)
  protos = rng.normal(size=(NUM_CLASSES, 6, 6, 1)).astype(np.float32)
  out = []
  for c in range(num_clients):
    n = sizes[c % len(sizes)]
    y = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    x = protos[y] + 0.8 * rng.normal(size=(n, 6, 6, 1)).astype(np.float32)
    out.append(tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(x=x, y=y)).batch(8))
  return out


DATA = client_datasets()
SPEC = DATA[0].element_spec


def common(**overrides):
  kwargs = dict(loss_fn=loss_fn, input_spec=SPEC, metrics_fn=metrics_fn,
                client_optimizer_fn=tff.learning.optimizers.build_sgdm(
                    0.1, momentum=0.9), seed=1)
  kwargs.update(overrides)
  return kwargs


def stock_model_fn():
  return tff.learning.models.from_keras_model(
      model_fn(), loss=loss_fn(), input_spec=SPEC, metrics=metrics_fn())


def run_rounds(process, state, rounds, data=DATA):
  outputs = []
  for _ in range(rounds):
    out = process.next(state, data)
    state = out.state
    outputs.append(out)
  return state, outputs


def run_against_stock(ours, stock, rounds=3):
  state = ours.initialize()
  trainable = list(ours.get_model_weights(state).trainable)
  stock_state = stock.set_model_weights(
      stock.initialize(), tff.learning.models.ModelWeights(trainable, []))
  state, _ = run_rounds(ours, state, rounds)
  stock_state, _ = run_rounds(stock, stock_state, rounds)
  for a, b in zip(ours.get_model_weights(state).trainable,
                  stock.get_model_weights(stock_state).trainable):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_dense_equals_stock_fed_avg():
  ours = algorithms.build_weighted_fed_avg(model_fn, **common())
  stock = tff.learning.algorithms.build_weighted_fed_avg(
      stock_model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(
          0.1, momentum=0.9),
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)
  run_against_stock(ours, stock)


def test_dense_with_server_momentum_equals_stock_fed_avgm():
  server = tff.learning.optimizers.build_sgdm(1.0, momentum=0.9)
  ours = algorithms.build_weighted_fed_avgm(
      model_fn, server_optimizer_fn=server, **common())
  stock = tff.learning.algorithms.build_weighted_fed_avg(
      stock_model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(
          0.1, momentum=0.9), server_optimizer_fn=server,
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)
  run_against_stock(ours, stock)


def eager_fed_prox_round(trainable, datasets, mu, lr=0.1, momentum=0.9):
  """One FedProx round by TF autodiff of loss + μ/2 ||w - w_global||²."""
  results, counts = [], []
  for ds in datasets:
    model = model_fn()
    model.set_weights(trainable)
    w0 = [tf.constant(w) for w in trainable]
    velocity = [tf.zeros_like(w) for w in trainable]
    n = 0
    for batch in ds:
      with tf.GradientTape() as tape:
        loss = loss_fn()(batch['y'], model(batch['x'], training=True))
        loss += mu / 2 * tf.add_n([tf.reduce_sum((w - g) ** 2) for w, g in
                                   zip(model.trainable_weights, w0)])
      grads = tape.gradient(loss, model.trainable_weights)
      velocity = [momentum * v + g for v, g in zip(velocity, grads)]
      for w, v in zip(model.trainable_weights, velocity):
        w.assign_sub(lr * v)
      n += int(batch['y'].shape[0])
    results.append(model.get_weights())
    counts.append(n)
  total = sum(counts)
  return [sum(c * r[i] for c, r in zip(counts, results)) / total
          for i in range(len(trainable))]


def test_fed_prox_matches_autodiff_of_the_prox_objective():
  ours = algorithms.build_weighted_fed_prox(model_fn, prox_mu=0.5, **common())
  state = ours.initialize()
  trainable = [np.asarray(w) for w in ours.get_model_weights(state).trainable]
  state, _ = run_rounds(ours, state, 1)
  expected = eager_fed_prox_round(trainable, DATA, mu=0.5)
  for a, b in zip(ours.get_model_weights(state).trainable, expected):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_stock_fed_prox_in_tff_087_pulls_the_wrong_way():
  """TFF 0.87's build_weighted_fed_prox adds μ (w_global - w), not μ (w - w_global).

  Documents why our FedProx is not compared with stock FedProx: stock equals
  the FedProx objective with -μ. If this fails, TFF fixed the sign.
  """
  ours = algorithms.build_weighted_fed_avg(model_fn, **common())
  trainable = [np.asarray(w) for w in
               ours.get_model_weights(ours.initialize()).trainable]
  stock = tff.learning.algorithms.build_weighted_fed_prox(
      stock_model_fn, proximal_strength=0.5,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(
          0.1, momentum=0.9),
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)
  state = stock.set_model_weights(
      stock.initialize(), tff.learning.models.ModelWeights(trainable, []))
  state = stock.next(state, DATA).state
  expected = eager_fed_prox_round(trainable, DATA, mu=-0.5)
  for a, b in zip(stock.get_model_weights(state).trainable, expected):
    np.testing.assert_allclose(a, b, atol=1e-5)


def np_weights(process, state):
  w = process.get_model_weights(state)
  return [np.asarray(t) for t in w.trainable], [np.asarray(t) for t in w.non_trainable]


def kernels_and_masks(layout, process, state):
  trainable, non_trainable = np_weights(process, state)
  return ([trainable[i] for i in layout.kernel_index],
          [non_trainable[i] for i in layout.mask_index])


def test_five_rounds_of_feddst_keep_every_invariant():
  alpha, every, end = 0.4, 2, 8
  kwargs = common(sparsity=0.7, sparsity_distribution='erk',
                  readjustment_ratio=alpha, rounds_between_readjustments=every,
                  readjustment_end_round=end)
  parts = algorithms.build_feddst_components(model_fn, **kwargs)
  layout = parts.layout
  process = algorithms.build_weighted_feddst(model_fn, **kwargs)
  state = process.initialize()
  _, prev_masks = kernels_and_masks(layout, process, state)
  changed_rounds = []
  for r in range(5):
    out = process.next(state, DATA)
    state = out.state
    kernels, masks = kernels_and_masks(layout, process, state)
    stats = out.metrics['client_work']['round']
    for k, m, n in zip(kernels, masks, layout.live_counts):
      assert m.sum() == n                 # exact per-layer density
      assert np.all(k[m == 0] == 0)       # zeros where the mask is 0
      assert set(np.unique(m)) <= {0.0, 1.0}
    np.testing.assert_allclose(out.metrics['finalizer']['layer_density'],
                               np.array(layout.live_counts) /
                               np.array(layout.kernel_sizes), rtol=1e-6)
    # Every client uploads exactly the target density.
    assert stats['client_density_mean'] == pytest.approx(
        sum(layout.live_counts) / sum(layout.kernel_sizes))
    expected_readjust = r >= 1 and (r - 1) % every == 0 and r < end
    assert bool(stats['readjusted']) == expected_readjust
    if not expected_readjust:
      assert stats['mask_hamming_mean'] == 0
    else:
      fraction = alpha / 2 * (1 + math.cos(math.pi * r / end))
      assert stats['readjustment_fraction'] == pytest.approx(fraction, 1e-6)
      # Each client prunes at most floor(α_r · live) and regrows as many.
      bound = 2 * sum(math.floor(np.float32(fraction) * n)
                      for n in layout.live_counts)
      assert 0 < stats['mask_hamming_mean'] <= bound
    if any(np.any(a != b) for a, b in zip(masks, prev_masks)):
      changed_rounds.append(r)
    # The finalizer counts the weights that entered the global mask.
    assert out.metrics['finalizer']['mask_swaps'] == sum(
        int(np.sum((a > 0) & (b == 0))) for a, b in zip(masks, prev_masks))
    prev_masks = masks
  # The global mask moves only after readjustment rounds.
  assert changed_rounds and set(changed_rounds) <= {1, 3}


def test_static_mask_when_alpha_is_zero():
  process = algorithms.build_weighted_random_mask(
      model_fn, **common(sparsity=0.8, rounds_between_readjustments=1,
                         readjustment_end_round=10))
  parts = algorithms.build_feddst_components(
      model_fn, **common(sparsity=0.8, readjustment_ratio=0.0))
  state = process.initialize()
  _, masks0 = kernels_and_masks(parts.layout, process, state)
  state, outs = run_rounds(process, state, 3)
  _, masks = kernels_and_masks(parts.layout, process, state)
  for a, b in zip(masks0, masks):
    np.testing.assert_array_equal(a, b)
  assert not any(bool(o.metrics['client_work']['round']['readjusted'])
                 for o in outs)


def payload_nbytes(payload):
  return sum(np.asarray(t).nbytes for t in tf.nest.flatten(payload))


def test_uplink_bytes_are_the_encoded_payload():
  kwargs = common(sparsity=0.8, readjustment_ratio=0.3,
                  rounds_between_readjustments=1, readjustment_end_round=10)
  parts = algorithms.build_feddst_components(model_fn, **kwargs)
  layout = parts.layout
  weights = parts.initial_model_weights_fn()
  dense_params = sum(int(np.prod(s.shape)) for s in layout.dense_specs)
  live = sum(layout.live_counts)
  mask_bytes = sum(math.ceil(n / 8) for n in layout.kernel_sizes)
  payload = tf.nest.map_structure(lambda t: t.numpy(), codec.encode(
      *layout.split(list(weights.trainable), list(weights.non_trainable)),
      send_masks=True))
  # Downlink: live values + packed masks + dense params, always with masks.
  assert payload_nbytes(payload) == 4 * live + mask_bytes + 4 * dense_params
  process = algorithms.build_weighted_feddst(model_fn, **kwargs)
  out = process.next(process.initialize(), DATA)
  # One owner per byte figure: the client work counts what arrives.
  assert 'distributor' not in out.metrics or not out.metrics['distributor']
  assert out.metrics['client_work']['round']['downlink_bytes'] == (
      len(DATA) * payload_nbytes(payload))
  for round_num, with_mask in [(0, False), (1, True)]:
    state = parts.client_work.initialize()
    state['round_num'] = round_num
    out = parts.client_work.next(state, [payload] * 2, DATA[:2])
    for result in out.result:
      closed_form = 4 * live + 4 * dense_params + (mask_bytes if with_mask else 0)
      assert payload_nbytes(result.update) == closed_form
      assert all((np.asarray(m).size > 0) == with_mask
                 for m in result.update.masks)
    stats = out.measurements['round']
    assert stats['uplink_bytes'] == sum(payload_nbytes(r.update)
                                        for r in out.result)
    assert stats['downlink_bytes'] == 2 * payload_nbytes(payload)


def np_masked_round(global_kernel, global_mask, clients, live_count,
                    min_votes=0):
  """Masked weighted mean, union, magnitude re-prune (votes break ties)."""
  total = np.zeros(global_kernel.size)
  votes_w = np.zeros(global_kernel.size)
  votes_c = np.zeros(global_kernel.size)
  for values, mask, weight in clients:
    mask = global_mask.ravel() if mask is None else mask.ravel()
    dense = np.zeros(global_kernel.size)
    dense[mask > 0] = values
    total += weight * dense
    votes_w += weight * mask
    votes_c += mask
  mean = np.divide(total, votes_w, out=np.zeros_like(total), where=votes_w > 0)
  union = votes_c >= max(min_votes, 1)
  order = np.lexsort((np.arange(mean.size), -votes_w, -np.abs(mean),
                      -union.astype(float)))
  new_mask = np.zeros(mean.size)
  new_mask[order[:live_count]] = 1
  return (mean * new_mask).reshape(global_kernel.shape), new_mask.reshape(
      global_kernel.shape)


@pytest.mark.parametrize('min_votes', [0, 2])
def test_one_round_aggregate_matches_numpy(min_votes):
  parts = algorithms.build_feddst_components(
      model_fn, **common(sparsity=0.6, sparsity_distribution='uniform',
                         readjustment_ratio=0.2, min_votes=min_votes))
  layout = parts.layout
  weights = parts.initial_model_weights_fn()
  kernels, masks, dense = layout.split(list(weights.trainable),
                                       list(weights.non_trainable))
  rng = np.random.default_rng(7)
  payloads, client_specs = [], []
  for c, weight in enumerate([3.0, 5.0, 2.0]):
    c_kernels, c_masks = [], []
    for k, m, n in zip(kernels, masks, layout.live_counts):
      if c == 0:  # keeps the global mask, sends no mask
        new_mask = m.copy()
      else:       # a readjusted mask: same count, different positions
        new_mask = np.zeros(m.size, np.float32)
        keep = rng.choice(np.flatnonzero(m.ravel()), n - n // 4, replace=False)
        grow = rng.choice(np.flatnonzero(m.ravel() == 0), n // 4, replace=False)
        new_mask[np.concatenate([keep, grow])] = 1
        new_mask = new_mask.reshape(m.shape)
      c_kernels.append((rng.normal(size=m.shape) * new_mask).astype(np.float32))
      c_masks.append(new_mask)
    c_dense = [rng.normal(size=d.shape).astype(np.float32) for d in dense]
    payload = codec.encode(c_kernels, c_masks, c_dense, send_masks=c > 0)
    payloads.append(tf.nest.map_structure(lambda t: t.numpy(), payload))
    client_specs.append((c_kernels, c_masks, c_dense, weight, c > 0))

  agg = parts.aggregator.next(parts.aggregator.initialize(), payloads,
                              [s[3] for s in client_specs])
  assert agg.measurements['clients'] == 3
  fin = parts.finalizer.next(parts.finalizer.initialize(), weights, agg.result)
  trainable = [np.asarray(t) for t in fin.result.trainable]
  non_trainable = [np.asarray(t) for t in fin.result.non_trainable]
  new_kernels, new_masks, new_dense = layout.split(trainable, non_trainable)

  for i, (k, m, n) in enumerate(zip(kernels, masks, layout.live_counts)):
    clients = []
    for c_kernels, c_masks, _, weight, sent in client_specs:
      values = c_kernels[i].ravel()[c_masks[i].ravel() > 0]
      clients.append((values, c_masks[i] if sent else None, weight))
    exp_kernel, exp_mask = np_masked_round(k, m, clients, n, min_votes)
    np.testing.assert_array_equal(new_masks[i], exp_mask)
    np.testing.assert_allclose(new_kernels[i], exp_kernel, rtol=1e-5, atol=1e-6)
  total_w = sum(s[3] for s in client_specs)
  for j, d in enumerate(new_dense):
    expected = sum(s[3] * s[2][j] for s in client_specs) / total_w
    np.testing.assert_allclose(d, expected, rtol=1e-5, atol=1e-6)


def test_nan_and_huge_clients_are_dropped():
  parts = algorithms.build_feddst_components(
      model_fn, **common(sparsity=0.5, readjustment_ratio=0.0,
                         client_norm_bound=1e4))
  layout = parts.layout
  weights = parts.initial_model_weights_fn()
  kernels, masks, dense = layout.split(list(weights.trainable),
                                       list(weights.non_trainable))
  good = codec.encode([k + 1.0 * m for k, m in zip(kernels, masks)], masks,
                         dense, send_masks=False)
  bad_kernels = [np.where(m > 0, np.nan, 0).astype(np.float32) for m in masks]
  bad = codec.encode(bad_kernels, masks, dense, send_masks=False)
  huge = codec.encode([1e5 * m for m in masks], masks, dense,
                         send_masks=False)
  payloads = [tf.nest.map_structure(lambda t: t.numpy(), p)
              for p in (good, bad, huge)]
  agg = parts.aggregator.next(parts.aggregator.initialize(), payloads,
                              [1.0, 9.0, 5.0])
  assert agg.measurements['dropped_clients'] == 2
  fin = parts.finalizer.next(parts.finalizer.initialize(), weights, agg.result)
  new_kernels, _, _ = layout.split(list(fin.result.trainable),
                                   list(fin.result.non_trainable))
  for nk, k, m in zip(new_kernels, kernels, masks):
    assert np.all(np.isfinite(nk))
    np.testing.assert_allclose(nk, (k + 1.0) * m, rtol=1e-6)


def test_feddst_learns_digits():
  digits = data_lib.build_federated_data(
      data_lib.load_digits(), partition='dirichlet', num_clients=10, beta=0.5,
      seed=0)
  datasets = [data_lib.preprocess(digits.train.create_tf_dataset_for_client(c),
                                  batch_size=16, shuffle_seed=0)
              for c in digits.client_ids]
  spec = datasets[0].element_spec
  process = algorithms.build_weighted_feddst(
      models.get_model_fn('mlp', (8, 8, 1), 10), loss_fn=loss_fn,
      input_spec=spec, metrics_fn=metrics_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.05, momentum=0.9),
      sparsity=0.8, readjustment_ratio=0.2, rounds_between_readjustments=2,
      readjustment_end_round=8, client_epochs=2, seed=0)
  state = process.initialize()
  state, outs = run_rounds(process, state, 10, datasets)
  losses = [o.metrics['client_work']['train']['loss'] for o in outs]
  assert losses[-1] < 0.6 * losses[0]
  model = models.keras_model_from_weights(
      models.get_model_fn('mlp', (8, 8, 1), 10), process.get_model_weights(state))
  x, y = digits.central_test
  accuracy = np.mean(np.argmax(model.predict(x, verbose=0), -1) == y)
  assert accuracy > 0.5  # chance is 0.1


def test_regrowth_from_several_last_batches_keeps_invariants():
  kwargs = common(sparsity=0.7, readjustment_ratio=0.3,
                  rounds_between_readjustments=1, readjustment_end_round=10,
                  regrowth_gradient_batches=3)
  layout = algorithms.build_feddst_components(model_fn, **kwargs).layout
  process = algorithms.build_weighted_feddst(model_fn, **kwargs)
  state, outs = run_rounds(process, process.initialize(), 2)
  assert outs[1].metrics['client_work']['round']['mask_hamming_mean'] > 0
  kernels, masks = kernels_and_masks(layout, process, state)
  for k, m, n in zip(kernels, masks, layout.live_counts):
    assert m.sum() == n and np.all(k[m == 0] == 0)


def np_readjust(w, g, m, fraction):
  """FedDST's readjustment in numpy: prune k smallest |w| among the live,
  regrow the k largest |g| among the previously dead, regrown weights = 0."""
  w, g, m = w.ravel(), g.ravel(), m.ravel()
  live = np.flatnonzero(m)
  dead = np.flatnonzero(m == 0)
  k = min(int(np.floor(np.float32(fraction) * np.float32(live.size))),
          dead.size)
  kept = m.copy()
  kept[live[np.argsort(np.abs(w[live]), kind='stable')[:k]]] = 0
  new_mask = kept.copy()
  new_mask[dead[np.argsort(-np.abs(g[dead]), kind='stable')[:k]]] = 1
  return new_mask, w * kept, k


@pytest.mark.parametrize('gradient_batches, jit_compile',
                         [(1, False), (3, False), (3, True)])
def test_client_readjustment_matches_eager_reference(gradient_batches,
                                                     jit_compile):
  """One client's upload = plain eager SGD with re-masking, then np_readjust
  on the summed gradients of the last `gradient_batches` batches; the same
  with each training step XLA-compiled."""
  alpha, lr, epochs, data = 0.3, 0.1, 2, DATA[1]
  kwargs = common(sparsity=0.7, readjustment_ratio=alpha,
                  rounds_between_readjustments=1, readjustment_end_round=10,
                  regrowth_gradient_batches=gradient_batches, client_epochs=epochs,
                  client_optimizer_fn=tff.learning.optimizers.build_sgdm(lr),
                  client_jit_compile=jit_compile)
  parts = algorithms.build_feddst_components(model_fn, **kwargs)
  layout = parts.layout
  weights = parts.initial_model_weights_fn()
  trainable = [np.asarray(w) for w in weights.trainable]
  non_trainable = [np.asarray(w) for w in weights.non_trainable]
  payload = tf.nest.map_structure(lambda t: t.numpy(), codec.encode(
      *layout.split(trainable, non_trainable), send_masks=True))
  state = parts.client_work.initialize()
  state['round_num'] = 1
  out = parts.client_work.next(state, [payload], [data])
  fraction = alpha / 2 * (1 + math.cos(math.pi / 10))
  assert out.measurements['round']['readjustment_fraction'] == pytest.approx(
      fraction, 1e-6)

  masks = {i: non_trainable[j]
           for i, j in zip(layout.kernel_index, layout.mask_index)}
  model = model_fn()
  for v, w in zip(model.trainable_weights, trainable):
    v.assign(w)
  loss = loss_fn()
  recent = []
  for _ in range(epochs):
    for batch in data:
      with tf.GradientTape() as tape:
        value = loss(batch['y'], model(batch['x'], training=True))
      grads = tape.gradient(value, model.trainable_weights)
      recent.append([grads[i].numpy() for i in layout.kernel_index])
      for i, (v, g) in enumerate(zip(model.trainable_weights, grads)):
        v.assign((v - lr * g) * masks[i] if i in masks else v - lr * g)
  summed = [sum(r[n] for r in recent[-gradient_batches:])
            for n in range(len(layout.kernel_index))]

  update = out.result[0].update
  readjusted = 0
  for n, (i, shape) in enumerate(zip(layout.kernel_index, layout.kernel_shapes)):
    size = int(np.prod(shape))
    want_mask, want_w, k = np_readjust(model.trainable_weights[i].numpy(),
                                       summed[n], masks[i], fraction)
    readjusted += k
    got_mask = codec.unpack_bits(update.masks[n], size).numpy()
    np.testing.assert_array_equal(got_mask, want_mask)
    np.testing.assert_allclose(update.values[n], want_w[want_mask > 0],
                               atol=1e-5)
  assert readjusted > 0
