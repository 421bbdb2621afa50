"""ClientData construction (no federated computation is executed here)."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_feddst.data import federated, sources
from tff_feddst.data.sources import DatasetNotFoundError

CENTRAL = sources.make_synthetic(300,
                                 image_shape=(6, 6, 1),
                                 num_classes=5,
                                 seed=1)


def client_arrays(client_data, cid):
  elements = list(
      client_data.create_tf_dataset_for_client(cid).as_numpy_iterator())
  return (np.stack([e['x'] for e in elements]),
          np.array([e['y'] for e in elements]))


@pytest.mark.parametrize('partition', ['dirichlet', 'k_class', 'iid'])
def test_build_federated_data(partition):
  fd = federated.build_federated_data(CENTRAL,
                                      partition=partition,
                                      num_clients=6,
                                      beta=0.5,
                                      classes_per_client=2,
                                      seed=0)
  assert fd.train.client_ids == fd.test.client_ids == fd.client_ids
  assert fd.client_ids[0] == '0000' and len(
      fd.client_ids) == fd.summary.num_clients
  expected_spec = collections.OrderedDict(x=tf.TensorSpec((6, 6, 1),
                                                          tf.float32),
                                          y=tf.TensorSpec((), tf.int32))
  assert fd.element_spec == expected_spec
  assert fd.train.element_type_structure == expected_spec
  assert fd.test.element_type_structure == expected_spec
  # Every client example is a genuine example of the right split with its own label.
  train_lookup = {
      x.tobytes(): y for x, y in zip(CENTRAL.x_train, CENTRAL.y_train)
  }
  test_lookup = {x.tobytes(): y for x, y in zip(CENTRAL.x_test, CENTRAL.y_test)}
  n_train = n_test = 0
  for cid in fd.client_ids:
    x, y = client_arrays(fd.train, cid)
    assert [train_lookup[xi.tobytes()] for xi in x] == list(y)
    xt, yt = client_arrays(fd.test, cid)
    assert [test_lookup[xi.tobytes()] for xi in xt] == list(yt)
    assert set(yt) <= set(y)
    n_train, n_test = n_train + len(y), n_test + len(yt)
  assert n_train == fd.summary.total_examples
  if fd.summary.dropped == 0:
    assert n_train == len(CENTRAL.x_train) and n_test == len(CENTRAL.x_test)
  np.testing.assert_array_equal(fd.central_test[1], CENTRAL.y_test)
  assert fd.num_classes == 5 and fd.input_shape == (6, 6, 1)


def test_unknown_partition():
  with pytest.raises(ValueError, match='dirichlet, k_class, iid'):
    federated.build_federated_data(CENTRAL, partition='zipf', num_clients=3)


def test_preprocess_batches_without_repeating():
  fd = federated.build_federated_data(CENTRAL,
                                      partition='iid',
                                      num_clients=3,
                                      seed=0)
  raw = fd.train.create_tf_dataset_for_client('0000')
  size = len(list(raw))
  batched = federated.preprocess(raw, batch_size=16, shuffle_seed=0)
  batches = list(batched.as_numpy_iterator())
  assert isinstance(batches[0], collections.OrderedDict) and list(
      batches[0]) == ['x', 'y']
  assert batches[0]['x'].shape == (16, 6, 6, 1)
  assert sum(len(b['y']) for b in batches) == size
  in_order = federated.preprocess(raw, batch_size=size, shuffle_buffer=0)
  np.testing.assert_array_equal(
      next(iter(in_order))['y'], [e['y'] for e in raw])


def test_load_emnist_not_found(tmp_path):
  with pytest.raises(DatasetNotFoundError) as err:
    federated.load_emnist(tmp_path)
  assert str(tmp_path / 'emnist_all.sqlite') in str(err.value)
  assert 'emnist_all.sqlite.lzma' in str(err.value)


def test_load_emnist_from_tiny_database(tmp_path, write_fake_emnist):
  rng = np.random.default_rng(0)

  def examples(labels):
    return [(rng.random((28, 28)).astype(np.float32), lab) for lab in labels]

  clients = {
      ('a', 'digits_only_train'): examples([1, 2, 3]),
      ('a', 'digits_only_test'): examples([4]),
      ('b', 'digits_only_train'): examples([5]),  # Too small.
      ('b', 'digits_only_test'): examples([6]),
      ('c', 'digits_only_train'): examples([7, 8])
  }  # No test split.
  write_fake_emnist(tmp_path / 'emnist_all.sqlite', clients)
  fd = federated.load_emnist(tmp_path, min_examples=2)
  assert fd.client_ids == fd.test.client_ids == ['a']
  assert fd.summary.dropped == 2 and fd.summary.total_examples == 3
  x, y = client_arrays(fd.train, 'a')
  assert x.shape == (3, 28, 28, 1) and x.dtype == np.float32
  np.testing.assert_array_equal(y, [1, 2, 3])
  written = np.stack([p for p, _ in clients[('a', 'digits_only_train')]])
  np.testing.assert_allclose(x[..., 0], written)
  assert fd.train.element_type_structure == fd.element_spec
  assert sorted(fd.central_test[1]) == [4, 6]
  assert fd.central_test[0].shape == (2, 28, 28, 1)
