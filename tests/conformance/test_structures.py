"""Client data the library cannot take is refused when the process is built,
by every registered algorithm, with a message that says what it expects."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_feddst.algorithms import registry

import conformance_lib as lib


def test_the_default_suite_runs_every_registered_algorithm():
  """Each algorithm's base case is in the default shards (so each builds and
  trains there, and no separate "every algorithm runs a round" test is
  needed), at a sparsity where it has a mask, when it takes one."""
  base = {a for a, v, _ in lib.default_cases() if v == 'base'}
  assert base == set(registry.ALGORITHMS)
  for a in registry.ALGORITHMS:
    if 'sparsity' in registry.ALGORITHMS[a].takes:
      assert 0 < lib.hparams(a, 'base')['sparsity'] < 1, a


def _named_data(keys_in_order, container=dict):
  rng = np.random.default_rng(0)
  y = rng.integers(0, lib.CLASSES, 8).astype(np.int32)
  features = {'extra': rng.normal(size=(8, 2)).astype(np.float32),
              'pixels': rng.normal(size=(8, 4, 4, 1)).astype(np.float32)}
  x = container((k, features[k]) for k in keys_in_order)
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


def _build(algorithm, data):
  return registry.build(
      lib.hparams(algorithm, 'base'), lib.MODELS['named_inputs_bn'].build,
      loss_fn=lib.loss_fn, input_spec=data.element_spec, seed=0,
      initial_client_data=data)


@pytest.mark.parametrize('algorithm', list(registry.ALGORITHMS))
def test_unsorted_plain_dict_is_refused_at_build(algorithm):
  data = _named_data(['pixels', 'extra'])
  with pytest.raises(ValueError, match=r"input_spec\[0\] is a dict with keys "
                     r"\['pixels', 'extra'\] out of sorted order.*"
                     'collections.OrderedDict'):
    _build(algorithm, data)


def test_ordered_dict_in_any_order_and_sorted_dict_are_taken():
  for data in (_named_data(['pixels', 'extra'], collections.OrderedDict),
               _named_data(['extra', 'pixels'])):
    process = _build('feddst', data)
    process.next(process.initialize(), [data, data])


def test_unbatched_spec_is_refused_at_build():
  data = lib.client_datasets('tuple', lib.MODELS['sequential'])[0]
  with pytest.raises(ValueError, match='looks unbatched'):
    registry.build(lib.hparams('feddst', 'base'), lib.MODELS['sequential'].build,
                   loss_fn=lib.loss_fn, input_spec=data.unbatch().element_spec,
                   seed=0)
