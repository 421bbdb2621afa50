"""PruneFL's steps through the TFF process against eager/numpy models.

The clients' importance (Σ_steps g)² replayed eagerly, the server's
example-weighted importance summed over the rounds since the last
reconfiguration and its mask equal to `sparsity.prunefl.reconfigure` on
hand-aggregated numpy inputs with a hand-computed time model (FLOP-derived
or measured), the uplink equal to the serialized upload, the initial pruning
replayed eagerly step by step at its cadence, and the invariants over a few
rounds.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from test_feddst_execution import DATA, common, loss_fn, model_fn
from tff_feddst import models
from tff_feddst.algorithms import prunefl as prunefl_algorithm
from tff_feddst.algorithms import prunefl_initial_pruning
from tff_feddst.sparse import codec
from tff_feddst.sparse import layout as layout_lib
from tff_feddst.sparsity import prunefl

LR, EPOCHS, DECAY, INTERVAL, SPARSITY = 0.1, 2, 0.01, 2, 0.25
BANDWIDTH, GFLOPS, OVERHEAD = 0.5, 2.0, 0.01


def prunefl_kwargs(**overrides):
  kwargs = common(
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(LR),
      client_epochs=EPOCHS, client_weight_decay=DECAY,
      rounds_between_readjustments=INTERVAL, sparsity=SPARSITY,
      prunefl_bandwidth_mbps=BANDWIDTH, prunefl_compute_gflops=GFLOPS,
      prunefl_round_overhead=OVERHEAD, prunefl_initial_interval_steps=20,
      prunefl_initial_reconfigurations=8, initial_client_data=DATA[3])
  kwargs.update(overrides)
  return kwargs


@pytest.fixture(scope='module')
def parts():
  return prunefl_algorithm.build_prunefl_components(model_fn,
                                                    **prunefl_kwargs())


@pytest.fixture(scope='module')
def process(parts):
  return tff.learning.templates.compose_learning_process(
      parts.initial_model_weights_fn, parts.distributor, parts.client_work,
      parts.aggregator, parts.finalizer)


def split(layout, weights):
  return layout.split([np.asarray(w) for w in weights.trainable],
                      [np.asarray(w) for w in weights.non_trainable])


def payload_of(layout, weights):
  kernels, masks, dense = split(layout, weights)
  return tf.nest.map_structure(np.asarray, codec.encode(
      kernels, masks, dense, send_masks=True))


def client_round(parts, weights, round_num, data):
  state = parts.client_work.initialize()
  state['round_num'] = round_num
  return parts.client_work.next(
      state, [payload_of(parts.layout, weights)] * len(data), data)


def eager_client(layout, weights, data):
  """One client's round replayed eagerly: SGD with coupled L2, the mask
  re-applied after every step, Σ of the dense loss gradients. Returns (final
  kernels, (Σg)² per kernel, Σ over dense params of (Σg)², examples)."""
  plain = model_fn()
  wrapped = models.make_prunable(plain, log=False)
  for v, w in zip(wrapped.trainable_weights, weights.trainable):
    v.assign(w)
  for v, w in zip(wrapped.non_trainable_weights, weights.non_trainable):
    v.assign(w)
  variables = wrapped.trainable_weights
  masks = dict(zip(layout.kernel_index, split(layout, weights)[1]))
  sums = [np.zeros(v.shape, np.float32) for v in variables]
  examples = 0
  for batch in data.repeat(EPOCHS):
    with tf.GradientTape() as tape:
      loss = loss_fn()(batch['y'], plain(batch['x'], training=True))
    grads = tape.gradient(loss, variables)
    examples += len(batch['y'])
    for i, (v, g) in enumerate(zip(variables, grads)):
      sums[i] += g.numpy()
      new = v.numpy() - LR * (g.numpy() + DECAY * v.numpy())
      v.assign(new * masks[i] if i in masks else new)
  kernels = [variables[i].numpy() for i in layout.kernel_index]
  importance = [sums[i] ** 2 for i in layout.kernel_index]
  base = sum(float(np.sum(sums[i] ** 2)) for i in range(len(variables))
             if i not in masks)
  return kernels, importance, base, examples


def nbytes(structure):
  return sum(np.asarray(t).nbytes for t in tf.nest.flatten(structure))


@pytest.fixture(scope='module')
def reconfiguration(parts):
  weights = parts.initial_model_weights_fn()
  return weights, client_round(parts, weights, INTERVAL, DATA[:2])


def test_client_importance_matches_eager_replay(parts, reconfiguration):
  weights, out = reconfiguration
  layout = parts.layout
  for result, data in zip(out.result, DATA[:2]):
    kernels, importance, base, examples = eager_client(layout, weights, data)
    upload = result.update
    assert float(result.update_weight) == examples
    for got, want in zip(upload.importance, importance):
      np.testing.assert_allclose(got, want.ravel(), rtol=2e-4, atol=1e-9)
    np.testing.assert_allclose(upload.base_importance, [base], rtol=2e-4)
    # The live values trained with the mask re-applied after every step.
    masks = split(layout, weights)[1]
    for values, k, m in zip(upload.payload.values, kernels, masks):
      np.testing.assert_allclose(values, k.ravel()[m.ravel() > 0],
                                 atol=2e-6)
    assert all(np.size(m) == 0 for m in upload.payload.masks)  # Unchanged.


def test_uplink_counts_the_serialized_upload(parts, reconfiguration):
  """Every round: the server sums the importance until it reconfigures."""
  weights, out = reconfiguration
  total = sum(parts.layout.kernel_sizes)
  quiet = client_round(parts, weights, INTERVAL + 1, DATA[:2])
  assert out.measurements['round']['readjusted']
  assert not quiet.measurements['round']['readjusted']
  for o in (out, quiet):
    uploads = [r.update for r in o.result]
    assert o.measurements['round']['uplink_bytes'] == sum(
        nbytes(u) for u in uploads)
    for u in uploads:  # Importance: 4 bytes per kernel weight, 4 for S0.
      assert nbytes(u) == nbytes(u.payload) + 4 * total + 4


def hand_time_model(layout, examples, measured=None, overhead=OVERHEAD):
  """t_l and c by hand: Dense kernels apply once per example (P_l = 1), or
  the `measured` compute seconds per weight and base per example."""
  assert layout.output_positions == (1, 1)
  link = 8.0 / (BANDWIDTH * 1e6)
  dense = sum(int(np.prod(s.shape)) for s in layout.dense_specs)
  mask_bytes = sum(-(-n // 8) for n in layout.kernel_sizes)
  c = overhead + (8.0 * dense + mask_bytes) / (BANDWIDTH * 1e6)
  if measured is None:
    return [6.0 * examples / (GFLOPS * 1e9) + link
            for _ in layout.kernel_sizes], c
  return ([examples * m + link for m in
           measured['seconds_per_weight_per_example']],
          c + examples * measured['base_seconds_per_example'])


def hand_sums(uploads, n):
  """Σ_k n_k s_k per kernel (layer-shaped later) and Σ_k n_k S0_k."""
  importance = [sum(np.float32(nk) * np.asarray(u.importance[i], np.float32)
                    for nk, u in zip(n, uploads))
                for i in range(len(uploads[0].importance))]
  base = sum(float(nk) * float(u.base_importance[0])
             for nk, u in zip(n, uploads))
  return importance, base


def test_server_sums_importance_since_the_last_reconfiguration(parts):
  """Rounds INTERVAL − 1 (no reconfiguration) and INTERVAL: the mask is the
  numpy rule's on the importance of both rounds' clients, summed by hand;
  the sum starts again after it."""
  layout = parts.layout
  weights = parts.initial_model_weights_fn()
  state = parts.finalizer.initialize()
  state['round_num'] = INTERVAL - 1
  rounds = []
  for data in (DATA[2:4], DATA[:2]):
    out = client_round(parts, weights, int(state['round_num']), data)
    uploads = [r.update for r in out.result]
    n = [np.float32(r.update_weight) for r in out.result]
    sums = parts.aggregator.next(parts.aggregator.initialize(), uploads, n)
    final = parts.finalizer.next(state, weights, sums.result)
    rounds.append((weights, uploads, n, state, final))
    state, weights = final.state, final.result
  (_, uploads1, n1, _, first), (weights2, uploads2, n2, state2, second) = rounds
  assert not first.measurements['reconfigured']
  for a, b in zip(split(layout, first.result)[1],
                  split(layout, rounds[0][0])[1]):
    np.testing.assert_array_equal(a, b)
  imp1, base1 = hand_sums(uploads1, n1)
  window = state2['importance_window']
  for got, want in zip(window['importance'], imp1):
    np.testing.assert_allclose(got, want, rtol=1e-6)
  assert int(window['client_rounds']) == 2
  # The reconfiguration: the example-weighted mean of round 2's live
  # values, the importance of both rounds.
  _, masks, _ = split(layout, weights2)
  means = []
  for i, m in enumerate(masks):
    flat = np.zeros((2, m.size), np.float32)
    for k, u in enumerate(uploads2):
      flat[k][m.ravel() > 0] = u.payload.values[i]
    means.append(((n2[0] * flat[0] + n2[1] * flat[1]) / (n2[0] + n2[1])
                  ).reshape(m.shape))
  imp2, base2 = hand_sums(uploads2, n2)
  importance = [(a + b).reshape(m.shape).astype(np.float64)
                for a, b, m in zip(imp1, imp2, masks)]
  times, c = hand_time_model(layout, float(sum(n1) + sum(n2)) / 4.0)
  cap = int(np.floor((1 - SPARSITY) * sum(layout.kernel_sizes)))
  want = prunefl.reconfigure(
      means, [m > 0 for m in masks], importance, times, base_time=c,
      max_decrease=prunefl.DEFAULT_MAX_DECREASE,
      base_importance=base1 + base2, max_live=cap)
  kernels, new_masks, _ = split(layout, second.result)
  assert second.measurements['reconfigured']
  assert second.measurements['importance_client_rounds'] == 4
  dormant = [np.asarray(d) for d in state2['dormant']]
  added = dropped = 0
  for k, got, w, old, mean, d in zip(kernels, new_masks, want, masks, means,
                                     dormant):
    np.testing.assert_array_equal(got > 0, w)
    added += int(np.sum((got > 0) & (old == 0)))
    dropped += int(np.sum((got == 0) & (old > 0)))
    # Kept: the mean; re-entered: its last server value; out: 0.
    expected = np.where(old > 0, mean, d) * w
    np.testing.assert_allclose(k, expected, atol=1e-6)
  assert added > 0 and dropped > 0  # The test is not trivial.
  assert sum(int(m.sum()) for m in new_masks) <= cap
  # The last round's importance alone would choose another mask.
  times2, c2 = hand_time_model(layout, float(sum(n2)) / 2.0)
  alone = prunefl.reconfigure(
      means, [m > 0 for m in masks],
      [s.reshape(m.shape).astype(np.float64) for s, m in zip(imp2, masks)],
      times2, base_time=c2, max_decrease=prunefl.DEFAULT_MAX_DECREASE,
      base_importance=base2, max_live=cap)
  assert any(np.any(a != w) for a, w in zip(alone, want))
  # The modelled time of a round of the new mask, at this round's examples.
  times_now, c_now = hand_time_model(layout, float(sum(n2)) / 2.0)
  assert second.measurements['modelled_round_seconds'] == pytest.approx(
      c_now + sum(t * int(m.sum()) for t, m in zip(times_now, new_masks)),
      rel=1e-9)
  # The sum starts again.
  after = second.state['importance_window']
  assert int(after['client_rounds']) == 0
  assert all(not np.any(np.asarray(s)) for s in after['importance'])


def selected_client(seed):
  """(wrapped model, its tff.learning model, layout, initial weights)."""
  tf.keras.utils.set_random_seed(seed)
  plain = model_fn()
  wrapped = models.make_prunable(plain, log=False)
  start = [v.numpy() for v in wrapped.trainable_weights]
  layout = layout_lib.build_layout(wrapped, 0.0, 'uniform')
  model = tff.learning.models.from_keras_model(
      plain, loss=loss_fn(), input_spec=DATA[0].element_spec)
  return wrapped, model, layout, start


def flop_times(layout):
  return prunefl_algorithm.time_model(
      layout, upload_bytes=4, bandwidth_mbps=BANDWIDTH,
      compute_gflops=GFLOPS, overhead_seconds=OVERHEAD)


def replay_initial_pruning(layout, start, data, windows, decay):
  """The selected client's steps eagerly: plain SGD with coupled L2 through
  w ⊙ M, Σ g² per step; after each window of steps (`windows`: (steps, the
  masks the rule then chose)) the masks change. Returns, per window, the
  kernels and the squared-gradient sums the rule was given."""
  replica = model_fn()
  variables = replica.trainable_weights
  for v, w in zip(variables, start):
    v.assign(w)
  masks = {i: np.ones(variables[i].shape, np.float32)
           for i in layout.kernel_index}
  batches = iter(data.repeat())
  seen = []
  for steps, new_masks in windows:
    squares = [np.zeros(v.shape, np.float32) for v in variables]
    for _ in range(steps):
      batch = next(batches)
      with tf.GradientTape() as tape:
        loss = loss_fn()(batch['y'], replica(batch['x'], training=True))
      grads = tape.gradient(loss, variables)
      for i, (v, g) in enumerate(zip(variables, grads)):
        g = g.numpy() * masks.get(i, 1.0)
        squares[i] += g ** 2
        new = v.numpy() - LR * (g + decay * v.numpy())
        v.assign(new * masks.get(i, 1.0))
    seen.append(([variables[i].numpy() for i in layout.kernel_index],
                 squares))
    for i, m in zip(layout.kernel_index, new_masks):
      masks[i] = np.asarray(m, np.float32)
      variables[i].assign(variables[i].numpy() * masks[i])
  return seen


def test_initial_pruning_replays_eagerly():
  """k = 5, at most 2 reconfigurations: 10 steps (two passes over the
  client's 5 batches), the squared gradients through w ⊙ M summed, then the
  numpy rule with the time model of a round of this client (40 examples):
  the same mask."""
  wrapped, model, layout, start = selected_client(5)
  result = prunefl_initial_pruning.run(
      wrapped, model, layout, DATA[1],
      optimizer=tff.learning.optimizers.build_sgdm(LR), epochs=1,
      weight_decay=0.0, time_model=flop_times(layout), max_decrease=0.3,
      max_live=None, interval_steps=5, max_reconfigurations=2,
      num_classes=None)
  ((kernels, squares),) = replay_initial_pruning(
      layout, start, DATA[1], [(10, [np.ones(1)] * layout.num_kernels)], 0.0)
  per_weight, c = hand_time_model(layout, 40)
  want = prunefl.reconfigure(
      kernels, [np.ones(k.shape, bool) for k in kernels],
      [squares[i].astype(np.float64) for i in layout.kernel_index],
      per_weight, base_time=c, max_decrease=0.3,
      base_importance=sum(float(squares[i].sum()) for i in range(len(start))
                          if i not in layout.kernel_index))
  got_kernels, got_masks, _ = layout.split(result.trainable,
                                           result.non_trainable)
  assert result.steps == 10 and result.first_reconfiguration == 10
  for k, m, w, full in zip(got_kernels, got_masks, want, kernels):
    np.testing.assert_array_equal(m > 0, w)
    np.testing.assert_allclose(k, full * w, atol=1e-6)
  assert result.densities == [sum(int(w.sum()) for w in want) /
                              sum(layout.kernel_sizes)]
  for d, full in zip(result.dormant_kernels, kernels):
    np.testing.assert_allclose(d, full, atol=1e-6)  # Pruned: their value.


def test_initial_pruning_sums_squares_since_the_last_reconfiguration(
    monkeypatch):
  """k = 2, at most 7: the rule runs after steps 10, 12 and 14, each time on
  Σ g² of the steps since the one before (10, 2, 2 steps), as an eager replay
  with the masks it chose; then the phase ends (14 = 7 · 2 steps)."""
  wrapped, model, layout, start = selected_client(7)
  calls = []
  original = prunefl.reconfigure

  def recording(weights, old_masks, importance, *args, **kwargs):
    new = original(weights, old_masks, importance, *args, **kwargs)
    calls.append(([np.array(s) for s in importance], new))
    return new

  monkeypatch.setattr(prunefl, 'reconfigure', recording)
  result = prunefl_initial_pruning.run(
      wrapped, model, layout, DATA[1],
      optimizer=tff.learning.optimizers.build_sgdm(LR), epochs=1,
      weight_decay=DECAY, time_model=flop_times(layout), max_decrease=0.3,
      max_live=None, interval_steps=2, max_reconfigurations=7,
      num_classes=None)
  assert result.steps == 14 and len(calls) == 3
  seen = replay_initial_pruning(
      layout, start, DATA[1],
      [(n, new) for n, (_, new) in zip((10, 2, 2), calls)], DECAY)
  for (_, squares), (importance, _) in zip(seen, calls):
    for i, s in zip(layout.kernel_index, importance):
      np.testing.assert_allclose(s, squares[i], rtol=1e-4, atol=1e-10)
  kernels, _, _ = layout.split(result.trainable, result.non_trainable)
  for k, want, m in zip(kernels, seen[-1][0], calls[-1][1]):
    np.testing.assert_allclose(k, want * m, atol=1e-6)
  assert any(np.any(~n) for n in calls[0][1])  # It pruned.


def test_initial_pruning_waits_for_the_accuracy_and_only_prunes(monkeypatch):
  """Accuracy checked every 100 steps until it reaches 1.5 / 4: the rule
  first runs 10 steps after the passing check, then every 30 steps; no
  pruned weight returns (no gradient reaches it); it stops once settled or
  after 8 · 30 steps."""
  wrapped, model, layout, _ = selected_client(6)
  masks = [wrapped.non_trainable_weights[i] for i in layout.mask_index]
  seen = []
  original = prunefl.reconfigure

  def recording(weights, old_masks, *args, **kwargs):
    seen.append([np.asarray(m, bool) for m in old_masks])
    return original(weights, old_masks, *args, **kwargs)

  monkeypatch.setattr(prunefl, 'reconfigure', recording)
  result = prunefl_initial_pruning.run(
      wrapped, model, layout, DATA[2],
      optimizer=tff.learning.optimizers.build_sgdm(LR), epochs=1,
      weight_decay=DECAY, time_model=flop_times(layout), max_decrease=0.3,
      max_live=None, interval_steps=30, max_reconfigurations=8,
      num_classes=4)
  seen.append([m.numpy() > 0 for m in masks])
  assert result.first_reconfiguration is not None
  assert result.first_reconfiguration % 100 == 10
  assert len(result.densities) == len(seen) - 1 >= 2
  every_30 = 1 + (240 - result.first_reconfiguration) // 30
  settled = prunefl.initial_pruning_settled(result.densities)
  assert len(result.densities) == every_30 or (
      len(result.densities) < every_30 and settled)
  for before, after in zip(seen, seen[1:]):
    for b, a in zip(before, after):
      assert np.all(b[a])  # Only prunes.
  assert result.densities == sorted(result.densities, reverse=True)
  assert result.steps == 240 or settled
  kernels, got_masks, _ = layout.split(result.trainable, result.non_trainable)
  for k, m in zip(kernels, got_masks):
    assert np.all(k[m == 0] == 0)


def test_process_starts_from_the_pruned_model_under_the_cap(parts, process):
  """... and its byte counts from the initial pruning's traffic: the dense
  model down, the pruned one up with its mask bits (float32 values)."""
  layout = parts.layout
  weights = parts.initial_model_weights_fn()
  kernels, masks, _ = split(layout, weights)
  live = sum(int(m.sum()) for m in masks)
  total = sum(layout.kernel_sizes)
  assert live <= (1 - SPARSITY) * total
  for k, m in zip(kernels, masks):
    assert np.all(k[m == 0] == 0)
  dense = sum(int(np.prod(s.shape)) for s in layout.dense_specs)
  bits = sum(-(-n // 8) for n in layout.kernel_sizes)
  state = process.initialize().client_work
  assert state['cumulative_uplink_bytes'] == 4 * live + bits + 4 * dense
  assert state['cumulative_downlink_bytes'] == 4 * total + bits + 4 * dense


def test_rounds_keep_the_invariants(parts, process):
  """Masked weights stay 0, the density stays under the cap, the mask moves
  only on reconfiguration rounds; every round's uplink is the clients' live
  values and dense params plus their importance."""
  layout = parts.layout
  state = process.initialize()
  cap = (1 - SPARSITY) * sum(layout.kernel_sizes)
  importance_bytes = 4 * sum(layout.kernel_sizes) + 4
  dense = sum(int(np.prod(s.shape)) for s in layout.dense_specs)
  for r in range(INTERVAL + 1):
    out = process.next(state, DATA[:2])
    old_masks = split(layout, process.get_model_weights(state))[1]
    state = out.state
    kernels, masks, _ = split(layout, process.get_model_weights(state))
    for k, m in zip(kernels, masks):
      assert np.all(k[m == 0] == 0)
    assert sum(m.sum() for m in masks) <= cap
    reconfigured = prunefl.is_reconfiguration_round(r, INTERVAL)
    assert bool(out.metrics['finalizer']['reconfigured']) == reconfigured
    assert bool(out.metrics['client_work']['round']['readjusted']) == (
        reconfigured)
    if not reconfigured:
      for a, b in zip(masks, old_masks):
        np.testing.assert_array_equal(a, b)
    assert out.metrics['finalizer']['modelled_round_seconds'] > OVERHEAD
    live = sum(int(m.sum()) for m in old_masks)
    assert out.metrics['client_work']['round']['uplink_bytes'] == 2 * (
        4 * live + 4 * dense + importance_bytes)
    # Client-rounds summed: 2 a round, from round 0 to the reconfiguration.
    assert out.metrics['finalizer']['importance_client_rounds'] == 2 * (
        r + 1)


MEASURED = {'kernel_sizes': [36 * 12, 12 * 4], 'base_seconds_per_example': 2e-4,
            'seconds_per_weight_per_example': [0.0, 3e-6]}


def test_a_run_uses_measured_coefficients():
  """The time model of a build with measured coefficients (the overhead
  default 0 then): the modelled round time is the hand-computed one."""
  parts = prunefl_algorithm.build_prunefl_components(model_fn, **prunefl_kwargs(
      prunefl_time_coefficients=MEASURED, prunefl_compute_gflops=None,
      prunefl_round_overhead=None))
  process = tff.learning.templates.compose_learning_process(
      parts.initial_model_weights_fn, parts.distributor, parts.client_work,
      parts.aggregator, parts.finalizer)
  state = process.initialize()
  out = process.next(state, DATA[:2])
  masks = split(parts.layout, process.get_model_weights(out.state))[1]
  examples = float(out.metrics['client_work']['round']['examples']) / 2.0
  times, c = hand_time_model(parts.layout, examples, MEASURED, overhead=0.0)
  assert out.metrics['finalizer']['modelled_round_seconds'] == pytest.approx(
      c + sum(t * int(m.sum()) for t, m in zip(times, masks)), rel=1e-9)


@pytest.mark.parametrize('overrides, message', [
    (dict(initial_client_data=None), 'initial_client_data is required'),
    (dict(prunefl_max_decrease=1.0), 'prunefl_max_decrease'),
    (dict(prunefl_initial_interval_steps=0), 'prunefl_initial_interval_steps'),
    (dict(prunefl_time_coefficients=MEASURED), 'prunefl_compute_gflops '
     'applies only with'),
    (dict(prunefl_time_coefficients=dict(MEASURED, kernel_sizes=[432, 40]),
          prunefl_compute_gflops=None),
     r'prunefl_time_coefficients were measured for kernels of sizes '
     r'\[432, 40\]; this model has \[432, 48\]'),
    (dict(prunefl_time_coefficients='{}', prunefl_compute_gflops=None),
     'prunefl_time_coefficients must be flops or measured coefficients '
     r'\(the JSON file .*\): the measured coefficients: missing'),
])
def test_builder_refuses_bad_arguments_naming_them(overrides, message):
  with pytest.raises(ValueError, match=message):
    prunefl_algorithm.build_prunefl_components(
        model_fn, **prunefl_kwargs(**overrides))
