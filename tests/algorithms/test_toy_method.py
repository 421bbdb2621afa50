"""A new method touches only its own module and one registry entry.

The toy method "magnitude-prune once after round 1, then fixed" is written
here as a contributor would write it: a builder on `algorithms.skeleton`
with the library's masked mean and mask finalizer, no client hook, and one
`AlgorithmConfig`. Nothing shared is edited: the registry entry is added for
the test only. Its rule is checked against numpy: after round 1 each
kernel keeps exactly its ERK count of the largest |w| of the aggregated
model; round 2 keeps that mask.
"""

import functools

import numpy as np
import tensorflow_federated as tff

from tff_feddst import models as models_lib
from tff_feddst import sparsity as sparsity_lib
from tff_feddst.aggregators import masked_mean
from tff_feddst.algorithms import registry
from tff_feddst.algorithms import skeleton
from tff_feddst.sparse import layout as layout_lib
from tff_feddst.templates import finalizer as finalizer_lib
from tff_feddst.templates import packed_state
from test_feddst_execution import DATA, SPEC, loss_fn, metrics_fn, model_fn

SPARSITY = 0.75


def build_weighted_prune_once(
    model_fn, *, loss_fn, input_spec, metrics_fn=None, client_optimizer_fn,
    sparsity: float, seed=None, client_epochs: int = 1,
    client_weight_decay: float = 0.0, upload_dtype: str = 'float32',
    initial_weights=None, client_jit_compile: bool = False,
    loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR,
    model_distributor=None, model_aggregator=None, metrics_aggregator=None):
  """Dense in round 1; the server then keeps each kernel's ERK count of the
  largest |w| for good."""
  a = dict(locals())
  client_optimizer, server_optimizer = skeleton.checked_optimizers(
      client_optimizer_fn=client_optimizer_fn, server_optimizer_fn=None,
      loss_fn=loss_fn)
  _, model = skeleton.prunable_model(model_fn, input_spec, seed=seed,
                                     initial_weights=initial_weights)
  layout = layout_lib.build_layout(model, 0.0, 'feddst_erk')  # Dense start.
  trainable, non_trainable = skeleton.weight_arrays(model)
  # The live counts the server keeps after every round, from the first.
  counts = sparsity_lib.layer_live_counts(
      models_lib.kernel_shapes(model), sparsity, 'feddst_erk',
      bias_sizes=models_lib.bias_sizes(model))
  rule = finalizer_lib.MaskRule(
      live_count_table=(tuple(int(n) for n in counts),))
  return packed_state.compose(skeleton.build_components(
      layout, trainable, non_trainable, client_optimizer=client_optimizer,
      hooks=(), aggregator_factory=masked_mean.MaskedSumFactory(layout),
      build_finalizer=functools.partial(
          finalizer_lib.build_mask_finalizer, layout,
          server_optimizer=server_optimizer, rule=rule),
      **skeleton.builder_parts(a)))


TOY = registry.AlgorithmConfig(
    name='prune_once', summary='Magnitude-prune once after round 1.',
    builder=f'{__name__}:build_weighted_prune_once', options=('sparsity',))


def _build(algorithm, **given):
  hp = registry.resolve(algorithm, given, rounds=2,
                        size_defaults={'rounds_between_readjustments': 3})
  hp['algorithm'] = algorithm
  return registry.build(hp, model_fn, loss_fn=loss_fn, input_spec=SPEC,
                        metrics_fn=metrics_fn, seed=0)


def _kernels_and_masks(process, state):
  weights = process.get_model_weights(state)
  return ([w for w in weights.trainable if w.ndim == 2],
          [m for m in weights.non_trainable if m.ndim == 2])


def test_a_toy_method_is_its_own_module_and_one_registry_entry(monkeypatch):
  monkeypatch.setitem(registry.ALGORITHMS, TOY.name, TOY)
  process = _build('prune_once', sparsity=SPARSITY)
  state = process.initialize()
  kernels, _ = _kernels_and_masks(process, state)
  assert all(np.all(k != 0) for k in kernels)  # Dense before round 1.
  # ERK as the FedDST reference counts it: each layer's bias with its kernel.
  biases = [b.size for b in process.get_model_weights(state).trainable
            if b.ndim == 1]
  expected_counts = sparsity_lib.layer_live_counts(
      [k.shape for k in kernels], SPARSITY, 'feddst_erk', bias_sizes=biases)

  # Independent truth for round 1: dense FedAvg from the same start on the
  # same clients trains the model the toy's server then prunes.
  fedavg = _build('fedavg')
  dense, _ = _kernels_and_masks(
      fedavg, fedavg.next(fedavg.initialize(), DATA).state)

  state = process.next(state, DATA).state
  kernels, masks = _kernels_and_masks(process, state)
  for k, m, d, n in zip(kernels, masks, dense, expected_counts):
    assert int(m.sum()) == int(n)
    top = np.zeros(d.size)
    top[np.argsort(-np.abs(d), axis=None)[:int(n)]] = 1
    np.testing.assert_array_equal(m, top.reshape(d.shape))
    np.testing.assert_allclose(k[m == 1], d[m == 1], rtol=1e-6, atol=1e-7)
    assert np.all(k[m == 0] == 0)

  state = process.next(state, DATA).state
  for before, now in zip(masks, _kernels_and_masks(process, state)[1]):
    np.testing.assert_array_equal(before, now)  # Fixed from then on.
