"""One client's FedDST computation, run eagerly: CPU seconds at S=0 vs S=0.8, with and
without readjustment (paper CNN, 150 examples, 10 epochs, batch 32).

  uv run python benchmarks/client_profile.py

Uses the private `_build_client_update` of templates/client_work.py on purpose: it profiles
the client computation without TFF's worker in between.
"""

import collections
import time

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tff_feddst import models
from tff_feddst.templates import client_work as cw, layout as lay
from tff_feddst.aggregators import encoding
from tensorflow_federated.python.learning import loop_builder
rng = np.random.default_rng(0)
x = rng.random((150, 28, 28, 1), dtype=np.float32); y = rng.integers(0, 10, 150).astype(np.int32)
ds = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(32)
spec = ds.element_spec
loss_fn = lambda: tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
def make(S):
  tf.keras.utils.set_random_seed(0)
  init = models.make_prunable(models.mnist_cnn()); models.apply_initial_masks(init, S, 'feddst_erk')
  L = lay.build_layout(init, S, 'feddst_erk')
  k, m, d = L.split(init.trainable_weights, init.non_trainable_weights)
  payload = encoding.encode([v.numpy() for v in k], [v.numpy() for v in m], [v.numpy() for v in d], send_masks=True)
  def models_fn():
    plain = models.mnist_cnn(); wrapped = models.make_prunable(plain, log=False)
    return wrapped, tff.learning.models.from_keras_model(
        plain, loss=loss_fn(), input_spec=spec)
  fn, _ = cw._build_client_update(models_fn, L, tff.learning.optimizers.build_sgdm(0.01, momentum=0.9),
     cw.LocalTrainingConfig(epochs=10), cw.ReadjustmentConfig(fraction=0.05, rounds_between=2, end_round=100),
     loop_builder.build_training_loop(tff.learning.LoopImplementation.DATASET_ITERATOR))
  return fn, payload
fns = {S: make(S) for S in (0.0, 0.8)}
for S,(fn,p) in fns.items(): fn(p, ds, tf.constant(0.05), tf.constant(False))  # trace
cpu = collections.defaultdict(list)
for rep in range(4):
  for S, (fn, p) in fns.items():
    for readjust in (False, True):
      c = time.process_time()
      fn(p, ds, tf.constant(0.05), tf.constant(readjust))
      cpu[(S, readjust)].append(time.process_time() - c)
for (S, readjust), values in sorted(cpu.items()):
  print(f'S={S} readjust={readjust}: {np.mean(values):.3f} CPU-s per client')
