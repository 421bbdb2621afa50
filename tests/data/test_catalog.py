"""The launchers' dataset catalog: TF-free, consistent names and defaults."""

import json

import pytest

from tff_feddst import choices
from tff_feddst.data import catalog
from tff_feddst.data import sources



def test_names_are_consistent():
  assert set(catalog.DATASETS) == set(sources.DATASET_NAMES) | {'emnist',
                                                                'tfrecord'}
  assert set(catalog.BUNDLED) == set(catalog.DATASETS) - {'tfrecord'}
  assert set(catalog.FEDERATED) <= set(catalog.DATASETS)
  assert set(catalog.DEMO) <= set(sources.DATASET_NAMES)
  # Every dataset but tfrecord (whose spec decides) has a default model.
  assert set(catalog.DEFAULT_MODELS) == set(catalog.BUNDLED)
  models = {*catalog.DEFAULT_MODELS.values(), *catalog.MODEL_BY_SHAPE.values()}
  assert models <= set(choices.MODELS)


def test_sizes_and_total_clients():
  assert catalog.size('digits') == 'demo' and catalog.size('mnist') == 'paper'
  assert catalog.default_total_clients('synthetic') == 20
  assert catalog.default_total_clients('cifar10') == 400
  assert catalog.default_total_clients('emnist') is None
  assert catalog.default_total_clients('tfrecord') is None


def test_default_model_of_a_tfrecord_spec(tmp_path):
  assert catalog.default_model('emnist', None) == 'femnist_cnn'
  (tmp_path / 'feature_spec.json').write_text(
      json.dumps({'input_shape': [28, 28, 1]}))
  assert catalog.default_model('tfrecord', tmp_path) == 'mnist_cnn'
  (tmp_path / 'feature_spec.json').write_text('{"input_shape": [5, 5, 1]}')
  with pytest.raises(ValueError, match=r'shape \(5, 5, 1\)'):
    catalog.default_model('tfrecord', tmp_path)
