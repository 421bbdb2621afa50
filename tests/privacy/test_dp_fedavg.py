"""DP-FedAvg rounds against numpy: clipping, noise scale, the fixed mask.

The deltas of test 1 come from the non-DP process's own client uploads
(trained − received live values and dense params, decoded in numpy), so the
DP client work, aggregator and finalizer are all checked against them.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'algorithms'))
# pylint: disable=g-import-not-at-top,wrong-import-position
from test_feddst_execution import DATA, common, model_fn  # noqa: E402

from tff_feddst import algorithms
from tff_feddst import models
from tff_feddst.sparse import codec


def flat_weights(layout, weights):
  """Live kernel values (global-mask order) + dense params, and the masks."""
  trainable = [np.asarray(t) for t in weights.trainable]
  non_trainable = [np.asarray(t) for t in weights.non_trainable]
  kernels, masks, dense = layout.split(trainable, non_trainable)
  flat = [k.ravel()[m.ravel() > 0] for k, m in zip(kernels, masks)]
  return np.concatenate(flat + [d.ravel() for d in dense]), kernels, masks


def client_deltas(kwargs, data):
  """Each client's trained − received vector, from the non-DP client work."""
  parts = algorithms.build_feddst_components(model_fn, **kwargs)
  weights = parts.initial_model_weights_fn()
  trainable = [np.asarray(t) for t in weights.trainable]
  non_trainable = [np.asarray(t) for t in weights.non_trainable]
  payload = codec.encode(*parts.layout.split(trainable, non_trainable),
                         send_masks=True)
  out = parts.client_work.next(parts.client_work.initialize(),
                               [payload] * len(data), data)
  received = np.concatenate([np.ravel(t) for t in payload.values +
                             payload.dense])
  deltas = []
  for result in out.result:
    update = result.update
    assert all(np.size(m) == 0 for m in update.masks)  # Mask unchanged.
    sent = np.concatenate([np.ravel(t) for t in update.values + update.dense])
    deltas.append(sent - received)
  return deltas


def clipped(delta, clip):
  return delta * min(1.0, clip / np.linalg.norm(delta))


@pytest.mark.parametrize('sparsity', [0.0, 0.6])
def test_noiseless_round_is_the_mean_of_clipped_deltas(sparsity):
  clip, per_round = 0.05, 5  # 4 clients come; the mean divides by 5.
  kwargs = common(sparsity=sparsity, readjustment_ratio=0.0)
  deltas = client_deltas(kwargs, DATA)
  assert all(np.linalg.norm(d) > 2 * clip for d in deltas)  # Clipping acts.
  want = np.sum([clipped(d, clip) for d in deltas], axis=0) / per_round

  process = algorithms.build_weighted_feddst(
      model_fn, dp_noise_multiplier=0.0, dp_clip_norm=clip,
      dp_clients_per_round=per_round, **kwargs)
  layout = algorithms.build_feddst_components(model_fn, **kwargs).layout
  state = process.initialize()
  before, _, masks0 = flat_weights(layout, process.get_model_weights(state))
  out = process.next(state, DATA)
  after, kernels, masks = flat_weights(
      layout, process.get_model_weights(out.state))
  np.testing.assert_allclose(after - before, want, atol=2e-6)
  assert np.linalg.norm(after - before) <= len(DATA) * clip / per_round + 1e-6
  for k, m, m0 in zip(kernels, masks, masks0):
    np.testing.assert_array_equal(m, m0)
    assert np.all(k[m == 0] == 0)
  assert out.metrics['aggregator']['dropped_clients'] == 0
  assert out.metrics['client_work']['round']['uplink_bytes'] == 4 * sum(
      d.size for d in deltas)


def wide_model_fn():
  return models.mlp((6, 6, 1), 4, hidden=100)


def test_noise_of_scale_z_c_over_clients_per_round_reaches_the_model():
  z, clip, per_round = 1.5, 0.4, 4
  empty = [d.take(0) for d in DATA]  # Clients whose deltas are exactly 0.
  kwargs = common(sparsity=0.5, readjustment_ratio=0.0,
                  input_spec=DATA[0].element_spec)
  layout = algorithms.build_feddst_components(wide_model_fn, **kwargs).layout
  process = algorithms.build_weighted_feddst(
      wide_model_fn, dp_noise_multiplier=z, dp_clip_norm=clip,
      dp_clients_per_round=per_round, **kwargs)
  state = process.initialize()
  before, _, masks0 = flat_weights(layout, process.get_model_weights(state))
  out = process.next(state, empty)
  after, kernels, masks = flat_weights(
      layout, process.get_model_weights(out.state))
  change = after - before
  assert change.size > 2000
  want = z * clip / per_round
  # The std estimate over n coordinates has relative error ~1/sqrt(2n) ≈ 1.5%.
  assert np.std(change) == pytest.approx(want, rel=0.1)
  assert abs(np.mean(change)) < 4 * want / np.sqrt(change.size)
  for k, m, m0 in zip(kernels, masks, masks0):
    np.testing.assert_array_equal(m, m0)  # Noise never enters the mask.
    assert np.all(k[m == 0] == 0)


def test_nan_client_is_dropped_not_summed():
  bad = DATA[0].map(lambda b: dict(x=b['x'] * np.nan, y=b['y']))
  kwargs = common(sparsity=0.5, readjustment_ratio=0.0)
  process = algorithms.build_weighted_feddst(
      model_fn, dp_noise_multiplier=0.0, dp_clip_norm=0.05,
      dp_clients_per_round=4, **kwargs)
  out = process.next(process.initialize(), [bad] + DATA[1:])
  assert out.metrics['aggregator']['dropped_clients'] == 1
  for w in process.get_model_weights(out.state).trainable:
    assert np.all(np.isfinite(w))


def test_adaptive_clipping_runs_and_reports_its_clip():
  kwargs = common(sparsity=0.5, readjustment_ratio=0.0)
  layout = algorithms.build_feddst_components(model_fn, **kwargs).layout
  process = algorithms.build_weighted_feddst(
      model_fn, dp_noise_multiplier=0.3, dp_adaptive_quantile=0.5,
      dp_clients_per_round=4, **kwargs)
  state = process.initialize()
  _, _, masks0 = flat_weights(layout, process.get_model_weights(state))
  clips = []
  for _ in range(2):
    out = process.next(state, DATA)
    state = out.state
    clips.append(float(out.metrics['aggregator']['dp']['dp_query_metrics'][
        'clip']))
  _, kernels, masks = flat_weights(layout, process.get_model_weights(state))
  for k, m, m0 in zip(kernels, masks, masks0):
    np.testing.assert_array_equal(m, m0)
    assert np.all(k[m == 0] == 0) and np.all(np.isfinite(k))
  # TFF's initial clip is 0.1; the client deltas are far larger, so it grows.
  assert clips[0] > 0.1 and clips[1] > clips[0]


@pytest.mark.parametrize('overrides,name', [
    (dict(dp_noise_multiplier=-1.0), 'dp_noise_multiplier'),
    (dict(dp_clip_norm=0.0), 'dp_clip_norm'),
    (dict(dp_clip_norm=None), 'dp_clip_norm'),
    (dict(dp_adaptive_quantile=0.5), 'dp_clip_norm'),  # Both given.
    (dict(dp_clip_norm=None, dp_adaptive_quantile=0.5,
          dp_noise_multiplier=1.0), 'dp_noise_multiplier'),  # 1 >= 0.1 * 4.
    (dict(readjustment_ratio=0.05), 'readjustment_ratio'),
    (dict(upload_dtype='bfloat16'), 'upload_dtype'),
    (dict(final_sparsity=0.7), 'final_sparsity'),
    (dict(dp_clients_per_round=None), 'dp_clients_per_round'),
    (dict(dp_noise_multiplier=None), 'dp_clip_norm'),  # C without DP.
])
def test_builder_refuses_bad_dp_arguments(overrides, name):
  kwargs = common(sparsity=0.5, readjustment_ratio=0.0,
                  dp_noise_multiplier=0.5, dp_clip_norm=1.0,
                  dp_clients_per_round=4)
  kwargs.update(overrides)
  with pytest.raises(ValueError, match=name):
    algorithms.build_feddst_components(model_fn, **kwargs)


def test_readjustment_refusal_says_why():
  with pytest.raises(ValueError, match='reveal which weights each client'):
    algorithms.build_feddst_components(model_fn, **common(
        sparsity=0.5, readjustment_ratio=0.05, dp_noise_multiplier=1.0,
        dp_clip_norm=1.0, dp_clients_per_round=4))


del tf  # Imported for the datasets' element specs only.
