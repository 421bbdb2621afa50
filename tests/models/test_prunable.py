"""TF-MOT wrapping: masks in TF-MOT's variables, only we edit them."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tff_feddst import models
from tff_feddst import sparsity

L = tf.keras.layers


def masked_model(seed=0, s=0.8):
  tf.keras.utils.set_random_seed(seed)
  model = models.make_prunable(models.digits_cnn())
  models.apply_initial_masks(model, s, 'erk')
  return model


def test_paper_parameter_counts():
  assert models.mnist_cnn().count_params() == 261_840
  # conv 3->6, 6->16 (5x5), FC 6400->120->84->10, with biases.
  assert models.cifar_cnn().count_params() == (
      3 * 6 * 25 + 6 + 6 * 16 * 25 + 16 + 6400 * 120 + 120 + 120 * 84 + 84 +
      84 * 10 + 10)
  # LEAF: conv 1->32, 32->64 (5x5 same), FC 3136->2048->62.
  assert models.femnist_cnn().count_params() == (
      25 * 32 + 32 + 25 * 32 * 64 + 64 + 3136 * 2048 + 2048 + 2048 * 62 + 62)


def test_masks_live_in_tfmot_variables_at_target_counts():
  model = masked_model()
  shapes = models.kernel_shapes(model)
  expected = sparsity.layer_live_counts(shapes, 0.8, 'erk')
  for pair, n in zip(models.masked_kernels(model), expected):
    assert 'mask' in pair.mask.name
    mask = pair.mask.numpy()
    assert mask.sum() == n
    kernel = pair.kernel.numpy()
    assert np.all(kernel[mask == 0] == 0)
    # Magnitude pruning of the init: every kept |w| >= every pruned |w|
    # (pruned ones are 0 now, so compare with a fresh copy of the init).
  for w in models.prunable_wrappers(model):
    assert int(w.pruning_step.numpy()) == 0


def test_initial_mask_is_magnitude_of_init():
  tf.keras.utils.set_random_seed(3)
  model = models.make_prunable(models.mlp((8, 8, 1), 10, 32))
  before = [p.kernel.numpy().copy() for p in models.masked_kernels(model)]
  counts = models.apply_initial_masks(model, 0.9, 'uniform')
  for w0, pair, n in zip(before, models.masked_kernels(model), counts):
    mask = pair.mask.numpy() > 0
    assert mask.sum() == n
    assert np.abs(w0[mask]).min() >= np.abs(w0[~mask]).max()


def test_masked_forward_equals_plain_model_with_masked_kernels():
  model = masked_model()
  # Put nonzero values under the mask: TF-MOT must still mask them.
  for pair in models.masked_kernels(model):
    pair.kernel.assign(tf.random.normal(pair.kernel.shape))
  plain = models.digits_cnn()
  weights = []
  masks = {p.kernel.ref(): p.mask for p in models.masked_kernels(model)}
  for v in model.trainable_weights:
    m = masks.get(v.ref())
    weights.append(v.numpy() * (m.numpy() if m is not None else 1))
  plain.set_weights(weights)
  x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
  np.testing.assert_allclose(model(x, training=False), plain(x), atol=1e-5)


def test_training_with_remask_keeps_masked_weights_zero():
  model = masked_model()
  pairs = models.masked_kernels(model)
  masks = [p.mask.numpy() for p in pairs]
  opt = tf.keras.optimizers.SGD(0.1, momentum=0.9)
  loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 10, 16)
  for _ in range(3):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    opt.apply_gradients(zip(grads, model.trainable_weights))
    # Without re-masking, momentum makes masked entries nonzero again.
    for p in pairs:
      p.kernel.assign(p.kernel * p.mask)
  for p, m in zip(pairs, masks):
    np.testing.assert_array_equal(p.mask.numpy(), m)  # TF-MOT never edits it
    assert np.all(p.kernel.numpy()[m == 0] == 0)
    assert np.any(p.kernel.numpy()[m > 0] != 0)


def test_set_masks_zeroes_and_validates():
  model = masked_model()
  masks = [np.ones(s, np.float32) for s in models.kernel_shapes(model)]
  masks[0][0] = 0
  models.set_masks(model, masks)
  assert np.all(models.masked_kernels(model)[0].kernel.numpy()[0] == 0)
  with pytest.raises(ValueError, match='shape'):
    models.set_masks(model, [np.ones((2, 2))] * len(masks))
  with pytest.raises(ValueError, match='Expected'):
    models.set_masks(model, masks[:1])


def test_strip_and_reload_round_trip(tmp_path):
  model = masked_model()
  x = np.random.default_rng(1).normal(size=(3, 8, 8, 1)).astype(np.float32)
  expected = model(x, training=False).numpy()
  plain = models.strip(model)
  assert not any(isinstance(l, models.prunable.PruneLowMagnitude)
                 for l in plain.layers)
  path = str(tmp_path / 'plain.keras')
  plain.save(path)
  reloaded = tf.keras.models.load_model(path)
  np.testing.assert_allclose(reloaded(x), expected, atol=1e-5)
  # The wrapped model round-trips with its masks under prune_scope.
  wrapped_path = str(tmp_path / 'wrapped.h5')
  model.save(wrapped_path)
  with tfmot.sparsity.keras.prune_scope():
    wrapped = tf.keras.models.load_model(
        wrapped_path, custom_objects={'NeverPrune': models.NeverPrune})
  for a, b in zip(models.get_masks(wrapped), models.get_masks(model)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(wrapped(x, training=False), expected, atol=1e-5)


def test_unprunable_layers_stay_dense_and_are_logged(monkeypatch):
  inputs = tf.keras.Input((8, 8, 3))
  h = L.Conv2D(4, 3)(inputs)
  h = L.BatchNormalization()(h)
  h = L.DepthwiseConv2D(3)(h)
  h = L.Flatten()(h)
  outputs = L.Dense(2)(h)
  model = tf.keras.Model(inputs, outputs)
  logged = []
  monkeypatch.setattr(models.prunable.logging, 'info',
                      lambda msg, *args: logged.append(msg % args))
  wrapped = models.make_prunable(model)
  assert [type(w.layer).__name__ for w in models.prunable_wrappers(wrapped)] == [
      'Conv2D', 'Dense']
  assert len(logged) == 1
  assert 'BatchNormalization' in logged[0] and 'DepthwiseConv2D' in logged[0]
  models.make_prunable(model, log=False)
  assert len(logged) == 1


def test_errors_name_the_problem():
  class Sub(tf.keras.Model):

    def __init__(self):
      super().__init__()
      self.d = L.Dense(2)

    def call(self, x):
      return self.d(x)

  with pytest.raises(TypeError, match='subclassed.*Sequential or functional'):
    models.make_prunable(Sub())
  no_prunable = tf.keras.Sequential([L.Input((4,)), L.BatchNormalization()])
  with pytest.raises(ValueError, match='no layer that TF-MOT can prune'):
    models.make_prunable(no_prunable)
  with pytest.raises(ValueError, match='Unknown model'):
    models.get_model_fn('resnet', (8, 8, 1), 10)
