"""FLASH rounds through the TFF process against eager/numpy models.

Stage 1 (round 0) of both variants, one JMWST round (client DST event
replayed eagerly, server mask by numpy's top-k rule), SPDST's static mask,
the density invariant, and per-client density budgets (hetero-FLASH).
"""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from flash_numpy import (np_event_counts, np_fma_mean, np_profile_counts,
                         np_server_mask)
from test_feddst_execution import DATA, common, loss_fn, model_fn
from tff_feddst import models
from tff_feddst.algorithms import flash
from tff_feddst.program import metrics as metrics_lib
from tff_feddst.sparse import codec
from tff_feddst.sparsity import budgets

SPARSITY, LR, EPOCHS, RATE = 0.6, 0.1, 2, 0.25


def flash_kwargs(**overrides):
  kwargs = common(sparsity=SPARSITY, client_epochs=EPOCHS,
                  flash_prune_rate=RATE,
                  client_optimizer_fn=tff.learning.optimizers.build_sgdm(LR))
  kwargs.update(overrides)
  return kwargs


def split(layout, weights):
  return layout.split([np.asarray(w) for w in weights.trainable],
                      [np.asarray(w) for w in weights.non_trainable])


def payload_of(layout, weights):
  kernels, masks, dense = split(layout, weights)
  return tf.nest.map_structure(np.asarray, codec.encode(
      kernels, masks, dense, send_masks=True))


def decode(update, layout, global_masks):
  """(dense kernels, bool masks, dense params) of one upload (no mask sent:
  the global one)."""
  kernels, masks = [], []
  for n, shape in enumerate(layout.kernel_shapes):
    size = int(np.prod(shape))
    mask = (codec.unpack_bits(update.masks[n], size).numpy()
            if np.size(update.masks[n]) else global_masks[n].ravel() > 0)
    flat = np.zeros(size, np.float32)
    flat[mask] = np.asarray(update.values[n], np.float32)
    kernels.append(flat.reshape(shape))
    masks.append(mask.reshape(shape))
  return kernels, masks, [np.asarray(d, np.float32) for d in update.dense]


def client_uploads(parts, weights, round_num, data=DATA):
  state = parts.client_work.initialize()
  state['round_num'] = round_num
  out = parts.client_work.next(state, [payload_of(parts.layout, weights)] *
                               len(data), data)
  global_masks = split(parts.layout, weights)[1]
  return [decode(r.update, parts.layout, global_masks) for r in out.result]


def raw_initial_kernels(layout, seed=1):
  """The unmasked initial kernels, made as the builder makes them."""
  tf.keras.utils.set_random_seed(seed)
  model = models.make_prunable(model_fn(), log=False)
  return [model.trainable_weights[i].numpy() for i in layout.kernel_index]


def built(variant, **overrides):
  parts = flash.build_flash_components(model_fn, variant=variant,
                                       **flash_kwargs(**overrides))
  return parts, tff.learning.templates.compose_learning_process(
      parts.initial_model_weights_fn, parts.distributor, parts.client_work,
      parts.aggregator, parts.finalizer)


@pytest.fixture(scope='module')
def jmwst():
  parts, process = built('jmwst')
  state0 = process.initialize()
  out0 = process.next(state0, DATA)
  return parts, process, state0, out0


def test_initial_mask_is_uniform_random_at_density_d(jmwst):
  parts, process, state0, _ = jmwst
  layout = parts.layout
  kernels, masks, _ = split(layout, process.get_model_weights(state0))
  sizes = np.array(layout.kernel_sizes, float)
  assert [int(m.sum()) for m in masks] == list(
      np_profile_counts([[np.full(s, 1.0 - SPARSITY) for s in
                          layout.kernel_shapes]], 1.0 - SPARSITY))
  assert sum(m.sum() for m in masks) <= (1 - SPARSITY) * sizes.sum()
  for k, m, raw in zip(kernels, masks, raw_initial_kernels(layout)):
    np.testing.assert_array_equal(k, raw * m)
  # Random, not the magnitude mask of the init.
  top = [np.abs(raw).ravel() >= np.sort(np.abs(raw).ravel())[-int(m.sum())]
         for raw, m in zip(raw_initial_kernels(layout), masks)]
  assert not all(np.array_equal(t, m.ravel() > 0) for t, m in zip(top, masks))


def test_stage_one_profile_random_mask_and_restart_from_init(jmwst):
  """Round 0: the new mask has the clients' profile rescaled to d (numpy),
  is a fresh random mask, and the weights are the initial ones under it."""
  parts, process, state0, out0 = jmwst
  layout = parts.layout
  uploads = client_uploads(parts, process.get_model_weights(state0), 0)
  client_masks = [[m.astype(float) for m in masks] for _, masks, _ in uploads]
  want = np_profile_counts(client_masks, 1.0 - SPARSITY)
  kernels, masks, dense = split(layout, process.get_model_weights(out0.state))
  assert [int(m.sum()) for m in masks] == list(want)
  # The clients moved the profile (the test is not trivial) ...
  _, start_masks, _ = split(layout, process.get_model_weights(state0))
  assert list(want) != [int(m.sum()) for m in start_masks]
  # ... the stage-1 weights are discarded: initial weights, new mask.
  for k, m, raw in zip(kernels, masks, raw_initial_kernels(layout)):
    np.testing.assert_array_equal(k, raw * m)
  _, _, initial_dense = split(layout, process.get_model_weights(state0))
  for d, d0 in zip(dense, initial_dense):
    np.testing.assert_array_equal(d, d0)
  # Random with the profile's counts: not any client's mask.
  for cm in client_masks:
    assert not all(np.array_equal(m > 0, c > 0) for m, c in zip(masks, cm))
  metrics = out0.metrics['finalizer']
  assert bool(metrics['stage_one'])
  assert metrics['density'] <= 1.0 - SPARSITY + 1e-7
  # Stage 1's uplink is counted: every client uploaded values and mask bits.
  up = out0.metrics['client_work']['round']['uplink_bytes']
  assert up == sum(4 * sum(int(m.sum()) for m in masks_) + sum(
      (s + 7) // 8 for s in layout.kernel_sizes) + 4 * sum(
          d.size for d in dense_) for _, masks_, dense_ in uploads)


def eager_flash_client(layout, weights, data, rate, got_masks):
  """E = 2 epochs of masked SGD with FLASH's event after epoch 1, replayed.

  The event's pruned set and per-layer regrowth counts come from numpy
  (`np_event_counts`); the random positions are taken from the TFF upload
  (`got_masks`) after checking they are that many dead weights. Returns the
  final kernels.
  """
  model = model_fn()
  trainable, non_trainable = ([np.asarray(w) for w in weights.trainable],
                              [np.asarray(w) for w in weights.non_trainable])
  for v, w in zip(model.trainable_weights, trainable):
    v.assign(w)
  masks = {i: non_trainable[j] for i, j in zip(layout.kernel_index,
                                               layout.mask_index)}
  loss = loss_fn()
  for epoch in (1, 2):
    for batch in data:
      with tf.GradientTape() as tape:
        value = loss(batch['y'], model(batch['x'], training=True))
      grads = tape.gradient(value, model.trainable_weights)
      for i, (v, g) in enumerate(zip(model.trainable_weights, grads)):
        v.assign((v - LR * g) * masks[i] if i in masks else v - LR * g)
    if epoch == 1:
      kernels = [model.trainable_weights[i].numpy() for i in layout.kernel_index]
      old = [masks[i] for i in layout.kernel_index]
      _, kept, grow = np_event_counts(kernels, old, rate * 0.5)
      for n, i in enumerate(layout.kernel_index):
        got = got_masks[n]
        assert np.all(got[kept[n]]), 'a kept weight is not in the upload'
        regrown = got & ~kept[n]
        assert regrown.sum() == grow[n]
        masks[i] = got.astype(np.float32)
        model.trainable_weights[i].assign(kernels[n] * kept[n])
  return [model.trainable_weights[i].numpy() for i in layout.kernel_index]


def test_jmwst_round_matches_eager_clients_and_numpy_server(jmwst):
  parts, process, _, out0 = jmwst
  layout = parts.layout
  weights = process.get_model_weights(out0.state)
  uploads = client_uploads(parts, weights, 1)
  _, global_masks, _ = split(layout, weights)
  moved = 0
  for (got_k, got_m, _), data in zip(uploads, DATA):
    want_k = eager_flash_client(layout, weights, data, RATE, got_m)
    for gk, wk, gm, g0 in zip(got_k, want_k, got_m, global_masks):
      np.testing.assert_allclose(gk, wk, atol=1e-5)
      moved += int(np.sum(gm != (g0 > 0)))
    # A client's total live count is the global one (layers may trade).
    assert sum(m.sum() for m in got_m) == sum(m.sum() for m in global_masks)
  assert moved > 0
  # Server: unweighted mean over holders, per-layer top-k (numpy).
  mean = np_fma_mean([u[0] for u in uploads], [u[1] for u in uploads])
  b = [np.mean([u[1][l].sum() for u in uploads])
       for l in range(layout.num_kernels)]
  want_masks = np_server_mask(mean, b, 1.0 - SPARSITY)
  out1 = process.next(out0.state, DATA)
  kernels, masks, dense = split(layout, process.get_model_weights(out1.state))
  for k, m, wm, mu in zip(kernels, masks, want_masks, mean):
    np.testing.assert_array_equal(m > 0, wm)
    np.testing.assert_allclose(k, mu * wm, atol=1e-6)
  for d, *client_d in zip(dense, *[u[2] for u in uploads]):
    np.testing.assert_allclose(d, np.mean(client_d, axis=0), atol=1e-6)
  total = sum(layout.kernel_sizes)
  assert sum(m.sum() for m in masks) <= (1 - SPARSITY) * total
  density = out1.metrics['finalizer']['density']
  assert density == pytest.approx(sum(m.sum() for m in masks) / total)
  assert not bool(out1.metrics['finalizer']['stage_one'])


def test_spdst_mask_is_static_after_stage_one_and_mean_is_numpy():
  parts, process = built('spdst')
  layout = parts.layout
  state = process.initialize()
  out = process.next(state, DATA)
  _, stage_masks, _ = split(layout, process.get_model_weights(out.state))
  total = sum(layout.kernel_sizes)
  for r in (1, 2):
    weights = process.get_model_weights(out.state)
    uploads = client_uploads(parts, weights, r)
    for _, masks, _ in uploads:  # No DST after stage 1.
      for m, s in zip(masks, stage_masks):
        np.testing.assert_array_equal(m, s > 0)
    mean = np_fma_mean([u[0] for u in uploads], [u[1] for u in uploads])
    out = process.next(out.state, DATA)
    kernels, masks, _ = split(layout, process.get_model_weights(out.state))
    for k, m, s, mu in zip(kernels, masks, stage_masks, mean):
      np.testing.assert_array_equal(m, s)
      np.testing.assert_allclose(k, mu * s, atol=1e-6)
    assert sum(m.sum() for m in masks) <= (1 - SPARSITY) * total
    assert not bool(out.metrics['client_work']['round']['readjusted'])
    assert out.metrics['finalizer']['mask_swaps'] == 0


def test_jmwst_keeps_total_density_at_most_d_over_rounds(jmwst):
  parts, process, _, out = jmwst
  total = sum(parts.layout.kernel_sizes)
  layer_densities = [tuple(out.metrics['finalizer']['layer_density'])]
  for _ in range(3):
    out = process.next(out.state, DATA)
    _, masks, _ = split(parts.layout, process.get_model_weights(out.state))
    assert sum(m.sum() for m in masks) <= (1 - SPARSITY) * total
    assert bool(out.metrics['client_work']['round']['readjusted'])
    layer_densities.append(tuple(out.metrics['finalizer']['layer_density']))
  assert out.metrics['finalizer']['mask_turnover'] > 0
  assert len(set(layer_densities)) > 1  # Per-layer densities drift.


def with_budgets(datasets, densities):
  return [collections.OrderedDict(
      data=ds, budget=tf.data.Dataset.from_tensors(np.float32(b)))
          for ds, b in zip(datasets, densities)]


def test_budgeted_clients_stay_within_budget_per_layer():
  """hetero-FLASH: each client's upload holds exactly its budget's counts
  per layer (the sub-mask rule), DST included, in stage 1 and after (JMWST;
  SPDST's budget run is the launcher's, tests/launchers/test_launchers_flash.py).
  """
  variant = 'jmwst'
  densities = [0.1, 0.2, 0.4, 0.1]
  parts, process = built(variant, client_density_budgets='0.1:0.5,0.2:0.25,'
                         '0.4:0.25')
  layout = parts.layout
  data = with_budgets(DATA, densities)
  state = process.initialize()
  for r in range(2):
    weights = process.get_model_weights(state)
    _, global_masks, _ = split(layout, weights)
    live = [int(m.sum()) for m in global_masks]
    uploads = client_uploads(parts, weights, r, data)
    for (_, masks, _), b in zip(uploads, densities):
      want = budgets.layer_counts(live, layout.kernel_sizes, b)
      assert [int(m.sum()) for m in masks] == list(want)
    out = process.next(state, data)
    state = out.state
    flat = metrics_lib.flatten_metrics(out.metrics)
    for label in ('0.1', '0.2', '0.4'):
      assert flat[f'round/budget/{label}/over_budget_clients'] == 0
    assert flat['round/readjusted'] == (r == 0 or variant == 'jmwst')
    kernels, masks, _ = split(layout, process.get_model_weights(state))
    assert sum(m.sum() for m in masks) <= (1 - SPARSITY) * sum(
        layout.kernel_sizes)
  # The server of that last round (numpy): global weights no client uploaded
  # keep their value, b_l = the aggregate's live count ('aggregate').
  old_kernels = split(layout, weights)[0]
  mean = np_fma_mean([u[0] for u in uploads], [u[1] for u in uploads])
  held = [np.sum([u[1][n] for u in uploads], axis=0) > 0
          for n in range(layout.num_kernels)]
  mean = [np.where((g > 0) & ~h, k, mu) for g, h, k, mu in
          zip(global_masks, held, old_kernels, mean)]
  assert any(np.any((g > 0) & ~h) for g, h in zip(global_masks, held))
  want = np_server_mask(mean, [np.count_nonzero(mu) for mu in mean],
                        1.0 - SPARSITY)
  for k, m, wm, mu in zip(kernels, masks, want, mean):
    np.testing.assert_array_equal(m > 0, wm)
    np.testing.assert_allclose(k, mu * wm, atol=1e-6)


@pytest.mark.parametrize('kwargs,name', [
    (dict(sparsity=0.0), 'sparsity'),
    (dict(flash_prune_rate=0.0), 'flash_prune_rate'),
    (dict(flash_prune_rate=1.5), 'flash_prune_rate'),
    (dict(readjustment_end_round=-1), 'readjustment_end_round'),
    (dict(readjustment_schedule='linear'), 'schedule'),
    (dict(variant='nst'), 'variant'),
    (dict(client_density_budgets='0.5:1'), 'budget 0.5 is above'),
])
def test_bad_values_are_refused_by_name(kwargs, name):
  args = flash_kwargs(variant='jmwst')
  args.update(kwargs)
  with pytest.raises(ValueError, match=name):
    flash.build_flash_components(model_fn, **args)


def test_builder_signature_is_explicit_and_covers_the_registry_options():
  import inspect  # pylint: disable=g-import-not-at-top
  from tff_feddst.algorithms import registry  # pylint: disable=g-import-not-at-top
  params = inspect.signature(flash.build_weighted_flash).parameters
  assert all(p.kind is not inspect.Parameter.VAR_KEYWORD
             for p in params.values())
  assert all(p.annotation is not inspect.Parameter.empty
             for p in params.values())
  for name in ('flash_spdst', 'flash_jmwst'):
    config = registry.ALGORITHMS[name]
    assert config.builder.endswith('flash:build_weighted_flash')
    assert set(config.options) | set(config.builder_args) <= set(params)
