"""SparsyFed's steps against numpy/eager models of the paper's rules.

Powerpropagation (forward, ∂L/∂v, zeros stay zero), the activation-pruned
weight gradient (Dense and Conv2D), the clients' global magnitude prune, one
client's round against unmasked eager training, one server round against a
plain weighted mean with the union mask, the per-round invariants, and the
effective weights that evaluation and export see.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import models
from tff_feddst import export
from tff_feddst.algorithms import registry
from tff_feddst.algorithms import sparsyfed
from tff_feddst.models import powerprop
from tff_feddst.sparse import codec
from tff_feddst.sparsity import global_magnitude
from tff_feddst.templates import packed_state
from test_feddst_execution import DATA, common, loss_fn, model_fn

BETA = 1.25
S = 0.7
LR, MOMENTUM, WD = 0.1, 0.9, 1e-3


# --- numpy models (docs/notes/field_methods.md §3.7) ------------------------


def np_power(v, beta):
  return np.sign(v) * np.abs(v) ** beta


def np_grad_v(v, grad_w, beta):
  return beta * np.abs(v) ** (beta - 1) * grad_w


def np_global_prune(vs, s):
  """Keeps the N - round(s N) largest |v| over all arrays (ties: lower
  position kept)."""
  flat = np.concatenate([np.abs(v).ravel() for v in vs])
  keep = flat.size - int(round(s * flat.size))
  order = np.lexsort((np.arange(flat.size), -flat))
  kept = np.zeros(flat.size, bool)
  kept[order[:keep]] = True
  out, o = [], 0
  for v in vs:
    out.append(kept[o:o + v.size].reshape(v.shape))
    o += v.size
  return out


def np_pruned_input(x, w_eff):
  """x with all but the top ceil((1 - s) x.size) |x| zeroed, s = zeros of w."""
  k = max(-(-np.count_nonzero(w_eff) * x.size // w_eff.size), 1)  # ceil
  threshold = np.sort(np.abs(x).ravel())[-k]
  return np.where(np.abs(x) >= threshold, x, 0.0)


def sparse_array(rng, shape, density):
  v = rng.normal(size=shape)
  return np.where(rng.random(shape) < density, v, 0.0)


# --- Powerpropagation --------------------------------------------------------


def test_powerprop_forward_and_gradient():
  rng = np.random.default_rng(0)
  v = sparse_array(rng, (5, 7), 0.6)
  c = rng.normal(size=v.shape)
  tv = tf.constant(v)  # float64: finite differences below are tight.
  with tf.GradientTape() as tape:
    tape.watch(tv)
    w = powerprop.effective_kernel(tv, BETA)
    loss = tf.reduce_sum(tf.sin(w) * c)
  grad = tape.gradient(loss, tv).numpy()
  np.testing.assert_allclose(w, np_power(v, BETA), rtol=1e-12)
  np.testing.assert_allclose(grad, np_grad_v(v, np.cos(np_power(v, BETA)) * c,
                                             BETA), rtol=1e-10)
  assert np.all(grad[v == 0] == 0.0)  # Exactly, not approximately.

  def f(v):
    return np.sum(np.sin(np_power(v, BETA)) * c)
  eps = 1e-6
  for i, j in zip(*np.nonzero(v)):
    e = np.zeros_like(v)
    e[i, j] = eps
    fd = (f(v + e) - f(v - e)) / (2 * eps)
    assert grad[i, j] == pytest.approx(fd, rel=1e-6, abs=1e-8)
  np.testing.assert_allclose(powerprop.inverse_kernel(w, BETA), v, atol=1e-12)


def test_zeros_stay_zero_under_sgd_momentum_and_l2():
  rng = np.random.default_rng(1)
  layer = powerprop.PowerpropDense(4, beta=BETA)
  layer.build((None, 6))
  v0 = sparse_array(rng, (6, 4), 0.5).astype(np.float32)
  layer.kernel.assign(v0)
  optimizer = tff.learning.optimizers.build_sgdm(LR, momentum=MOMENTUM)
  variables = tuple(layer.trainable_weights)
  state = optimizer.initialize(
      tuple(tf.TensorSpec(v.shape, v.dtype) for v in variables))
  for _ in range(5):
    x = tf.constant(rng.normal(size=(8, 6)), tf.float32)
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.square(layer(x, training=True) - 1.0))
    grads = tape.gradient(loss, variables)
    grads = tuple(g + WD * v for g, v in zip(grads, variables))
    state, updated = optimizer.next(state, variables, grads)
    for var, u in zip(variables, updated):
      var.assign(u)
  v = layer.kernel.numpy()
  assert np.all(v[v0 == 0] == 0.0)
  assert np.all(v[v0 != 0] != v0[v0 != 0])  # The others trained.


def test_powerprop_model_keeps_structure_and_init_law():
  tf.keras.utils.set_random_seed(0)
  plain = model_fn()
  model = powerprop.powerprop_model(plain, BETA)
  assert [type(l).__name__ for l in model.layers] == [
      'Flatten', 'PowerpropDense', 'PowerpropDense']
  assert [w.shape for w in model.weights] == [w.shape for w in plain.weights]
  # v = sign(u)|u|^(1/β) of the plain model's weights: same function.
  x = np.random.default_rng(0).normal(size=(5, 6, 6, 1)).astype(np.float32)
  np.testing.assert_allclose(model(x), plain(x), atol=1e-5)
  # A fresh clone draws v from the layers' own init by the same map, so
  # |w| = |v|^β has the Glorot-uniform law: within ±sqrt(6/(fan_in+fan_out)).
  fresh = powerprop.powerprop_model(plain, BETA, copy_weights=False)
  w = powerprop.effective_kernel(fresh.layers[1].kernel, BETA).numpy()
  assert np.max(np.abs(w)) <= np.sqrt(6.0 / (36 + 12)) + 1e-6
  assert np.max(np.abs(fresh.layers[1].kernel.numpy())) > np.max(np.abs(w))


def test_other_prunable_layers_are_refused_by_name():
  model = tf.keras.Sequential([
      tf.keras.layers.Input((4,), dtype=tf.int32),
      tf.keras.layers.Embedding(10, 3, name='emb'),
      tf.keras.layers.Flatten(), tf.keras.layers.Dense(2)])
  with pytest.raises(ValueError, match=r'emb \(Embedding\)'):
    powerprop.powerprop_model(model, BETA)


# --- activation pruning -------------------------------------------------------


def dense_grads(layer, x, c, training):
  x = tf.constant(x, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = tf.reduce_sum(layer(x, training=training) * c)
  gx, gv = tape.gradient(loss, [x, layer.kernel])
  return gx.numpy(), gv.numpy()


@pytest.mark.parametrize('density', [0.1, 1.0])
def test_dense_weight_gradient_uses_the_top_k_input(density):
  rng = np.random.default_rng(2)
  layer = powerprop.PowerpropDense(5, beta=BETA, use_bias=True)
  layer.build((None, 30))
  v = sparse_array(rng, (30, 5), density).astype(np.float32)
  layer.kernel.assign(v)
  x = rng.normal(size=(7, 30)).astype(np.float32)  # k = ceil(1.4 nnz)
  c = rng.normal(size=(7, 5)).astype(np.float32)
  w = np_power(v.astype(np.float64), BETA)
  gx, gv = dense_grads(layer, x, c, training=True)
  x_kept = np_pruned_input(x, w)
  if density < 1.0:
    assert np.count_nonzero(x_kept) == int(np.ceil(
        np.count_nonzero(w) / w.size * x.size))
  else:
    np.testing.assert_array_equal(x_kept, x)
  np.testing.assert_allclose(gv, np_grad_v(v, x_kept.T @ c, BETA),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(gx, c @ w.T, rtol=1e-4, atol=1e-5)
  # At evaluation, and with activation pruning off: the exact gradient.
  unpruned = powerprop.PowerpropDense(5, beta=BETA, activation_pruning=False)
  unpruned.build((None, 30))
  unpruned.set_weights(layer.get_weights())
  for gx_exact, gv_exact in (dense_grads(layer, x, c, training=False),
                             dense_grads(unpruned, x, c, training=True)):
    np.testing.assert_allclose(gv_exact, np_grad_v(v, x.T @ c, BETA),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(gx_exact, gx)


def test_conv_weight_gradient_uses_the_top_k_input():
  rng = np.random.default_rng(3)
  layer = powerprop.PowerpropConv2D(3, 3, strides=2, padding='same',
                                    beta=BETA)
  layer.build((None, 7, 7, 2))
  v = sparse_array(rng, (3, 3, 2, 3), 0.2).astype(np.float32)
  layer.kernel.assign(v)
  x = tf.constant(rng.normal(size=(2, 7, 7, 2)), tf.float32)
  c = tf.constant(rng.normal(size=(2, 4, 4, 3)), tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = tf.reduce_sum(layer(x, training=True) * c)
  gx, gv = tape.gradient(loss, [x, layer.kernel])
  # Reference: the plain convolution's autodiff on x (input gradient) and on
  # the numpy top-k input x~ (weight gradient), chained through w(v).
  w = tf.constant(np_power(v, BETA).astype(np.float32))
  x_kept = tf.constant(np_pruned_input(x.numpy(), w.numpy()), tf.float32)
  conv = lambda x, w: tf.nn.conv2d(x, w, strides=2, padding='SAME')
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([x, w])
    exact = tf.reduce_sum(conv(x, w) * c)
    pruned = tf.reduce_sum(conv(x_kept, w) * c)
  np.testing.assert_allclose(gx, tape.gradient(exact, x), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(gv, np_grad_v(v, tape.gradient(pruned, w).numpy(),
                                           BETA), rtol=1e-4, atol=1e-5)
  assert not np.allclose(gv, np_grad_v(v, tape.gradient(exact, w).numpy(),
                                       BETA), atol=1e-3)
  with tf.GradientTape() as tape:  # Evaluation: exact.
    loss = tf.reduce_sum(layer(x, training=False) * c)
  np.testing.assert_allclose(
      tape.gradient(loss, layer.kernel),
      np_grad_v(v, conv_weight_grad(conv, x, w, c), BETA), rtol=1e-4, atol=1e-5)


def conv_weight_grad(conv, x, w, c):
  with tf.GradientTape() as tape:
    tape.watch(w)
    loss = tf.reduce_sum(conv(x, w) * c)
  return tape.gradient(loss, w).numpy()


# --- global magnitude prune ---------------------------------------------------


@pytest.mark.parametrize('s', [0.0, 0.5, 0.7, 0.93])
def test_global_prune_keeps_exactly_the_largest_across_layers(s):
  rng = np.random.default_rng(4)
  vs = [rng.normal(size=(6, 5)) * 0.1, rng.normal(size=(5, 4)) * 3.0,
        sparse_array(rng, (4,), 0.5)]
  masks = [np.ones_like(v) for v in vs]
  got = [m.numpy() > 0 for m in global_magnitude.global_magnitude_masks(
      [tf.constant(v, tf.float32) for v in vs],
      [tf.constant(m, tf.float32) for m in masks],
      global_magnitude.num_keep(54, s))]
  n = sum(v.size for v in vs)
  assert sum(int(g.sum()) for g in got) == n - int(round(s * n))
  for g, want in zip(got, np_global_prune(vs, s)):
    np.testing.assert_array_equal(g, want)
  # Ranking by |w| = |v|^β instead of |v| keeps the same weights.
  for g, want in zip(got, np_global_prune([np_power(v, BETA) for v in vs], s)):
    np.testing.assert_array_equal(g, want)


# --- the process ------------------------------------------------------------


def kwargs(**overrides):
  values = dict(client_optimizer_fn=tff.learning.optimizers.build_sgdm(
      LR, momentum=MOMENTUM), sparsity=S, sparsyfed_beta=BETA,
                client_epochs=2, client_weight_decay=WD)
  values.update(overrides)
  return common(**values)


@pytest.fixture(scope='module')
def parts():
  return algorithms.build_sparsyfed_components(model_fn, **kwargs())


@pytest.fixture(scope='module')
def process(parts):
  return sparsyfed.compose_sparsyfed(parts, BETA)


def split_numpy(layout, weights):
  return layout.split([np.asarray(w) for w in weights.trainable],
                      [np.asarray(w) for w in weights.non_trainable])


def eager_client(v_trainable, data):
  """SGD + momentum + L2 on v through the powerprop model, no masks at all
  (the authors' dense client), then the numpy global prune."""
  model = powerprop.powerprop_model(model_fn(), BETA, copy_weights=False)
  for var, w in zip(model.trainable_weights, v_trainable):
    var.assign(w)
  velocity = [np.zeros_like(w) for w in v_trainable]
  loss = loss_fn()
  for _ in range(2):
    for batch in data:
      with tf.GradientTape() as tape:
        value = loss(batch['y'], model(batch['x'], training=True))
      grads = tape.gradient(value, model.trainable_weights)
      for i, (var, g) in enumerate(zip(model.trainable_weights, grads)):
        velocity[i] = MOMENTUM * velocity[i] + (g.numpy() + WD * var.numpy())
        var.assign(var.numpy() - LR * velocity[i])
  return [v.numpy() for v in model.trainable_weights]


def test_client_round_equals_unmasked_training_then_global_prune(parts):
  layout = parts.layout
  weights = parts.initial_model_weights_fn()
  kernels, masks, dense = split_numpy(layout, weights)
  # A sparse received model: the initial v pruned to 50% globally.
  masks = [m.astype(np.float32) for m in np_global_prune(kernels, 0.5)]
  kernels = [k * m for k, m in zip(kernels, masks)]
  payload = tf.nest.map_structure(np.asarray, codec.encode(
      kernels, masks, dense, send_masks=True))
  out = parts.client_work.next(parts.client_work.initialize(), [payload],
                               [DATA[1]])
  update = out.result[0].update
  trainable = [np.asarray(w) for w in weights.trainable]
  for i, k in zip(layout.kernel_index, kernels):
    trainable[i] = k
  want = eager_client(trainable, DATA[1])
  want_kernels = [want[i] for i in layout.kernel_index]
  # Re-masking is a no-op: unmasked training kept every zero at 0.
  for k, m in zip(want_kernels, masks):
    assert np.all(k[m == 0] == 0.0)
  want_masks = np_global_prune(want_kernels, S)
  n = sum(layout.kernel_sizes)
  live = 0
  for j, (k, m) in enumerate(zip(want_kernels, want_masks)):
    got_mask = codec.unpack_bits(update.masks[j], k.size).numpy()
    np.testing.assert_array_equal(got_mask, m.ravel())
    np.testing.assert_allclose(update.values[j], k.ravel()[got_mask],
                               atol=1e-5)
    live += int(got_mask.sum())
  assert live == n - int(round(S * n))
  for got, i in zip(update.dense, layout.dense_trainable_index):
    np.testing.assert_allclose(got, want[i], atol=1e-5)
  assert out.measurements['round']['downlink_density'] == pytest.approx(0.5,
                                                                        abs=1e-3)


def uploads(parts, weights, data):
  """Each client's upload (dense kernels, masks, dense params, weight)."""
  layout = parts.layout
  payload = tf.nest.map_structure(np.asarray, codec.encode(
      *split_numpy(layout, weights), send_masks=True))
  out = parts.client_work.next(parts.client_work.initialize(),
                               [payload] * len(data), data)
  _, global_masks, _ = split_numpy(layout, weights)
  clients = []
  for result in out.result:
    update, kernels, masks = result.update, [], []
    for j, (shape, g) in enumerate(zip(layout.kernel_shapes, global_masks)):
      size = int(np.prod(shape))
      if np.size(update.masks[j]):
        m = codec.unpack_bits(update.masks[j], size).numpy()
      else:
        m = g.ravel() > 0
      k = np.zeros(size)
      k[m] = update.values[j]
      kernels.append(k.reshape(shape))
      masks.append(m.reshape(shape))
    clients.append((kernels, masks, [np.asarray(d) for d in update.dense],
                    float(result.update_weight)))
  return clients


def test_rounds_against_numpy_fedavg_with_the_union_mask(parts, process):
  layout = parts.layout
  n = sum(layout.kernel_sizes)
  keep = n - int(round(S * n))
  data = DATA[:3]
  state = process.initialize()
  prev_masks, prev_density = None, 1.0
  for round_num in range(3):
    weights = packed_state.unpacked_model_weights(state, layout)  # v.
    clients = uploads(parts, weights, data)
    out = process.next(state, data)
    state = out.state
    # Every client uploads exactly its budget, within the received mask.
    _, received, _ = split_numpy(layout, weights)
    for kernels, masks, _, _ in clients:
      assert sum(int(m.sum()) for m in masks) == keep
      assert all(np.all(r[m] > 0) for m, r in zip(masks, received))
    # The server model: plain weighted mean (zeros counted), union mask.
    total = sum(c[3] for c in clients)
    new_kernels, new_masks, new_dense = split_numpy(
        layout, packed_state.unpacked_model_weights(state, layout))
    for j in range(layout.num_kernels):
      mean = sum(c[3] * c[0][j] for c in clients) / total
      union = np.any([c[1][j] for c in clients], axis=0)
      np.testing.assert_array_equal(new_masks[j] > 0, union)
      np.testing.assert_allclose(new_kernels[j], mean * union, atol=1e-6)
    for j, d in enumerate(new_dense):
      np.testing.assert_allclose(
          d, sum(c[3] * c[2][j] for c in clients) / total, atol=1e-6)
    # Metrics: client density fixed, downlink density = the received union.
    rnd, fin = out.metrics['client_work']['round'], out.metrics['finalizer']
    assert rnd['client_density_mean'] == pytest.approx(keep / n)
    assert rnd['downlink_density'] == pytest.approx(prev_density)
    density = sum(int(m.sum()) for m in new_masks) / n
    assert fin['density'] == pytest.approx(density)
    assert density >= keep / n
    if prev_masks is not None:  # β > 1: the union can only shrink.
      assert all(np.all(p[m > 0] > 0) for m, p in zip(new_masks, prev_masks))
    prev_masks, prev_density = new_masks, density
  assert prev_density < 1.0


def test_effective_weights_make_an_ordinary_exportable_model(
    parts, process, tmp_path):
  state = process.next(process.initialize(), DATA[:3]).state
  v = packed_state.unpacked_model_weights(state, parts.layout)
  weights = process.get_model_weights(state)
  for i in parts.layout.kernel_index:
    np.testing.assert_allclose(weights.trainable[i],
                               np_power(np.asarray(v.trainable[i]), BETA),
                               rtol=1e-5, atol=1e-7)
  plain = models.keras_model_from_weights(model_fn, weights)
  assert [type(l).__name__ for l in plain.layers] == ['Flatten', 'Dense',
                                                      'Dense']
  trained = powerprop.powerprop_model(model_fn(), BETA, copy_weights=False)
  trained.set_weights([np.asarray(w) for w in v.trainable])
  x = np.concatenate([b['x'] for b in DATA[0]])[:8]
  np.testing.assert_allclose(plain(x), trained(x, training=False), atol=1e-5)
  artifacts = export.export_model(plain, str(tmp_path), x, int8=False)
  assert [a.name for a in artifacts] == ['saved_model', 'model_dense.tflite',
                                         'model_sparse.tflite']
  reloaded = tf.saved_model.load(str(tmp_path / 'saved_model'))
  got = list(reloaded.signatures['serving_default'](tf.constant(x)).values())
  np.testing.assert_allclose(got[0], trained(x, training=False), atol=1e-5)
  # set_model_weights takes effective weights: a round trip keeps v.
  again = process.set_model_weights(process.initialize(), weights)
  for a, b in zip(again.global_model_weights.trainable, v.trainable):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bad_beta_is_refused_naming_it():
  with pytest.raises(ValueError, match='sparsyfed_beta must be >= 1'):
    algorithms.build_weighted_sparsyfed(model_fn, **kwargs(sparsyfed_beta=0.9))
  with pytest.raises(registry.OptionError, match='sparsyfed_beta must be >= 1'):
    registry.resolve('sparsyfed', {'sparsyfed_beta': 0.5}, rounds=4,
                     size_defaults={'rounds_between_readjustments': 1})
  with pytest.raises(registry.OptionError, match='sparsyfed_beta applies only'):
    registry.resolve('feddst', {'sparsyfed_beta': 1.5}, rounds=4,
                     size_defaults={'rounds_between_readjustments': 1})
