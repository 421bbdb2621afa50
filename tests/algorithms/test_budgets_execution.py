"""Per-client density budgets in the process, against numpy models.

A client's sub-mask (top-|w| per layer within the global mask), its training
and readjustment within the budget (eager reference), its upload bytes, and
one round of a process with three budget groups whose masked mean equals
numpy's.
"""

import collections
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst.algorithms import registry
from tff_feddst.program import metrics as metrics_lib
from tff_feddst.sparse import codec
from tff_feddst.sparsity import budgets
from test_dynamics_options import eager_client, initial_payload
from test_feddst_execution import (DATA, SPEC, common, loss_fn, metrics_fn,
                                   model_fn)


def with_budgets(datasets, densities):
  return [collections.OrderedDict(
      data=ds, budget=tf.data.Dataset.from_tensors(np.float32(b)))
          for ds, b in zip(datasets, densities)]


def decode(update, layout):
  """(values scattered to dense kernels, masks) of one upload, in numpy."""
  kernels, masks = [], []
  for n, shape in enumerate(layout.kernel_shapes):
    size = int(np.prod(shape))
    mask = codec.unpack_bits(update.masks[n], size).numpy()
    dense = np.zeros(size, np.float32)
    dense[mask] = np.asarray(update.values[n], np.float32)
    kernels.append(dense.reshape(shape))
    masks.append(mask.reshape(shape).astype(np.float32))
  return kernels, masks


@pytest.mark.parametrize('budget,readjusting', [(0.1, True), (0.2, False),
                                                (0.4, True)])
def test_client_trains_and_uploads_its_budget_submask(budget, readjusting):
  """Sub-mask = numpy's top-|w| rule; training (and the readjustment after
  epoch 1 of 2) on it = eager SGD with re-masking; the upload holds exactly
  the budget's counts, and its bytes are its tensors' (with mask bits)."""
  alpha = 0.3 if readjusting else 0.0
  lr, epochs, data = 0.1, 2, DATA[1]
  parts = algorithms.build_feddst_components(model_fn, **common(
      sparsity=0.6, readjustment_ratio=alpha, rounds_between_readjustments=1,
      readjustment_end_round=10, client_epochs=epochs, readjust_after_epoch=1,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(lr),
      client_density_budgets='0.1:0.3,0.2:0.3,0.4:0.4'))
  layout = parts.layout
  trainable, non_trainable, payload = initial_payload(parts)
  state = parts.client_work.initialize()
  state['round_num'] = 1
  out = parts.client_work.next(state, [payload], with_budgets([data],
                                                             [budget]))
  kernels = [trainable[i] for i in layout.kernel_index]
  global_masks = [non_trainable[j] for j in layout.mask_index]
  sub = budgets.budget_masks(kernels, global_masks, budget)
  counts = budgets.layer_counts([int(m.sum()) for m in global_masks],
                                layout.kernel_sizes, budget)
  start = list(trainable)
  for i, s in zip(layout.kernel_index, sub):
    start[i] = start[i] * s
  fraction = alpha / 2 * (1 + math.cos(math.pi / 10)) if readjusting else 0.0
  want_w, want_masks = eager_client(
      start, dict(zip(layout.kernel_index, sub)), data, lr=lr, epochs=epochs,
      after_epoch=1 if readjusting else 0, fraction=fraction,
      kernel_index=layout.kernel_index)
  update = out.result[0].update
  got_kernels, got_masks = decode(update, layout)
  moved = 0
  for n, i in enumerate(layout.kernel_index):
    np.testing.assert_array_equal(got_masks[n], want_masks[i])
    np.testing.assert_allclose(got_kernels[n], want_w[i], atol=1e-5)
    assert got_masks[n].sum() == counts[n]      # the budget's count, exactly
    moved += int(np.sum(got_masks[n] != sub[n]))
  assert (moved > 0) == readjusting  # The readjustment kept the count.
  assert sum(counts) <= budget * sum(layout.kernel_sizes) + 1e-9
  # Bytes: live float32 values + the packed mask + dense params.
  want_bytes = sum(4 * int(c) + math.ceil(s / 8)
                   for c, s in zip(counts, layout.kernel_sizes))
  want_bytes += sum(4 * int(np.prod(s.shape)) for s in layout.dense_specs)
  stats = out.measurements['round']
  assert stats['uplink_bytes'] == want_bytes
  group = stats['budget'][budgets.label(budget)]
  assert group['clients'] == 1 and group['over_budget_clients'] == 0
  assert group['uplink_bytes_per_client'] == want_bytes
  assert group['live_weights_per_client'] == sum(counts)


def np_masked_mean_round(kernels, masks, uploads, weights):
  """numpy: per weight, the weighted mean over the clients that upload it;
  a global weight no client uploads keeps its value; the mask is fixed
  (RandomMask, and sub-masks are inside it)."""
  out = []
  for n, (k, m) in enumerate(zip(kernels, masks)):
    total = np.zeros(k.shape)
    votes = np.zeros(k.shape)
    for (ck, cm), w in zip(uploads, weights):
      total += w * ck[n]
      votes += w * cm[n]
    mean = np.divide(total, votes, out=np.zeros(k.shape), where=votes > 0)
    out.append(np.where((m > 0) & (votes == 0), k, mean) * m)
  return out


def test_round_with_three_budget_groups_masked_mean_and_metrics():
  densities = [0.1, 0.2, 0.1, 0.3]  # None at the global density 0.4.
  kwargs = common(sparsity=0.6, readjustment_ratio=0.0,
                  client_density_budgets='0.1:0.5,0.2:0.25,0.3:0.25')
  process = algorithms.build_weighted_feddst(model_fn, **kwargs)
  parts = algorithms.build_feddst_components(model_fn, **kwargs)
  layout = parts.layout
  trainable, non_trainable, payload = initial_payload(parts)
  client_data = with_budgets(DATA, densities)
  uploads_out = parts.client_work.next(parts.client_work.initialize(),
                                       [payload] * 4, client_data)
  uploads = [decode(r.update, layout) for r in uploads_out.result]
  weights = [float(r.update_weight) for r in uploads_out.result]
  kernels = [trainable[i] for i in layout.kernel_index]
  masks = [non_trainable[j] for j in layout.mask_index]
  # Every client's upload is within its budget, layer by layer.
  for (_, cm), b in zip(uploads, densities):
    counts = budgets.layer_counts([int(m.sum()) for m in masks],
                                  layout.kernel_sizes, b)
    assert [int(m.sum()) for m in cm] == list(counts)
    for m, g in zip(cm, masks):
      assert np.all(m <= g)
  want = np_masked_mean_round(kernels, masks, uploads, weights)
  state = process.initialize()
  out = process.next(state, client_data)
  new = process.get_model_weights(out.state)
  for n, i in enumerate(layout.kernel_index):
    np.testing.assert_allclose(new.trainable[i], want[n], atol=1e-6)
    np.testing.assert_array_equal(new.non_trainable[layout.mask_index[n]],
                                  masks[n])
  # Some global weights were held by no client (no 0.4 budget) and kept
  # their value; the test is not trivial.
  held = [sum(cm[n] for _, cm in uploads) for n in range(len(masks))]
  assert any(np.any((m > 0) & (h == 0)) for m, h in zip(masks, held))
  flat = metrics_lib.flatten_metrics(out.metrics)
  for label, clients in (('0.1', 2), ('0.2', 1), ('0.3', 1)):
    assert flat[f'round/budget/{label}/clients'] == clients
    assert flat[f'round/budget/{label}/over_budget_clients'] == 0
    assert flat[f'round/budget/{label}/uplink_bytes_per_client'] > 0
  assert (flat['round/budget/0.1/live_weights_per_client'] <
          flat['round/budget/0.2/live_weights_per_client'] <
          flat['round/budget/0.3/live_weights_per_client'])


def test_a_budget_at_the_global_density_changes_nothing():
  """Budgets change the type of the client data, not the training: with one
  budget equal to the global density 1 - S (every client keeps the whole
  global mask) two rounds on a fixed mask give the weights, masks and
  training metrics of the process without budgets. (Readjusting rounds are
  not compared: a budgeted client readjusts by its own rule, every layer
  within its counts.)"""
  kwargs = dict(sparsity=0.6, readjustment_ratio=0.0)
  plain = algorithms.build_weighted_feddst(model_fn, **common(**kwargs))
  assert isinstance(plain.next.type_signature.parameter[1].member,
                    tff.SequenceType)
  budgeted = algorithms.build_weighted_feddst(model_fn, **common(
      client_density_budgets='0.4:1', **kwargs))
  member = budgeted.next.type_signature.parameter[1].member
  assert str(member) == ('<data=<x=float32[?,6,6,1],y=int32[?]>*,'
                         'budget=float32*>')
  state, budgeted_state = plain.initialize(), budgeted.initialize()
  for _ in range(2):
    out = plain.next(state, DATA)
    budgeted_out = budgeted.next(budgeted_state,
                                 with_budgets(DATA, [0.4] * len(DATA)))
    state, budgeted_state = out.state, budgeted_out.state
  flat = metrics_lib.flatten_metrics(out.metrics)
  budgeted_flat = metrics_lib.flatten_metrics(budgeted_out.metrics)
  for key in ('train/loss', 'train/accuracy', 'density/total'):
    assert budgeted_flat[key] == pytest.approx(flat[key], rel=1e-5), key
  want = plain.get_model_weights(state)
  got = budgeted.get_model_weights(budgeted_state)
  for w, g in zip(want.trainable, got.trainable):
    np.testing.assert_allclose(g, w, atol=1e-5)
  for w, g in zip(want.non_trainable, got.non_trainable):
    np.testing.assert_array_equal(g, w)  # Masks included.
  # The weights moved: the comparison is not of two initial states.
  start = plain.get_model_weights(plain.initialize())
  assert any(not np.allclose(w, s) for w, s in zip(want.trainable,
                                                   start.trainable))


@pytest.mark.parametrize('kwargs,message', [
    (dict(sparsity=0.6, client_density_budgets='0.5:1'),
     'budget 0.5 is above the global density 1 - sparsity = 0.4'),
    (dict(sparsity=0.0, client_density_budgets='0.5:1'),
     'client_density_budgets needs a sparse model'),
    (dict(sparsity=0.6, client_density_budgets='0.1:0.5'),
     'fractions sum to 0.5'),
    (dict(sparsity=0.6, client_density_budgets='0.1:1',
          dp_noise_multiplier=1.0, dp_clip_norm=1.0, dp_clients_per_round=2),
     'client_density_budgets cannot be used with dp_noise_multiplier'),
])
def test_builder_refusals(kwargs, message):
  with pytest.raises(ValueError, match=message):
    algorithms.build_feddst_components(model_fn, **common(
        readjustment_ratio=0.0, **kwargs))


@pytest.mark.parametrize('algorithm', ['feddst', 'feddst_consensus',
                                       'random_mask', 'feddst_prox'])
def test_every_sparse_algorithm_keeps_its_clients_within_budget(algorithm):
  """Built through the registry (as the launcher does), readjusting where the
  algorithm readjusts: every client's upload within its budget, layer by
  layer, and the global density unchanged."""
  hp = registry.resolve(
      algorithm, {'client_epochs': 1, 'sparsity': 0.6,
                  'client_density_budgets': '0.1:0.5,0.2:0.5'},
      rounds=4, size_defaults={'rounds_between_readjustments': 1})
  hp['algorithm'] = algorithm
  process = registry.build(hp, model_fn, loss_fn=loss_fn, input_spec=SPEC,
                           metrics_fn=metrics_fn, seed=1)
  densities = [0.1, 0.2, 0.2, 0.1]
  state = process.initialize()
  for _ in range(2):  # Round 1 (0-based) readjusts for the FedDST variants.
    out = process.next(state, with_budgets(DATA, densities))
    state = out.state
    flat = metrics_lib.flatten_metrics(out.metrics)
    assert flat['round/budget/0.1/clients'] == 2
    assert flat['round/budget/0.2/clients'] == 2
    assert flat['round/budget/0.1/over_budget_clients'] == 0
    assert flat['round/budget/0.2/over_budget_clients'] == 0
    assert flat['density/total'] == pytest.approx(0.4, abs=0.01)
  readjusts = hp['readjustment_ratio'] > 0
  assert bool(flat['round/readjusted']) == readjusts
  n = sum(int(np.prod(s)) for s in
          algorithms.build_feddst_components(
              model_fn, **common(sparsity=0.6, readjustment_ratio=0.0)
          ).layout.kernel_shapes)
  assert flat['round/budget/0.1/live_weights_per_client'] <= 0.1 * n + 2
  assert flat['round/budget/0.2/live_weights_per_client'] <= 0.2 * n + 2
