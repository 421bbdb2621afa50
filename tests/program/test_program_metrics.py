"""Flattening of process metrics and the per-client accuracy mean."""

import collections

import numpy as np

from tff_feddst.program import evaluation
from tff_feddst.program import metrics as metrics_lib

OD = collections.OrderedDict


def test_flatten_metrics_names_and_types():
  metrics = OD(
      distributor=OD(downlink_bytes_per_client=np.int64(1048)),
      client_work=OD(
          train=OD(sparse_categorical_accuracy=np.float32(0.5),
                   loss=np.float32(0.25), num_examples=np.int64(320)),
          round=OD(round_num=np.int64(0), readjusted=np.bool_(True),
                   cumulative_uplink_bytes=np.int64(3664))),
      aggregator=OD(clients=np.int32(4)),
      finalizer=OD(layer_density=np.array([0.25, 0.5], np.float32),
                   density=np.float32(0.3)))
  flat = metrics_lib.flatten_metrics(metrics,
                                     kernel_names=['fc1/kernel', 'fc2/kernel'])
  assert flat == {
      'distributor/downlink_bytes_per_client': 1048,
      'train/accuracy': 0.5, 'train/loss': 0.25, 'train/num_examples': 320,
      'round/readjusted': 1, 'round/cumulative_uplink_bytes': 3664,
      'aggregator/clients': 4,
      'density/fc1/kernel': 0.25, 'density/fc2/kernel': 0.5,
      'density/total': float(np.float32(0.3)),
  }
  assert all(type(v) in (int, float) for v in flat.values())
  # Without (matching) names the densities are numbered.
  numbered = metrics_lib.flatten_metrics(metrics, kernel_names=['only_one'])
  assert numbered['density/0'] == 0.25 and numbered['density/1'] == 0.5


def test_mean_client_accuracy_is_unweighted_over_clients_with_tests():
  # Client 0: 1/1 right; client 1: none; client 2: 1/3 right.
  correct = np.array([True, False, True, False])
  segments = np.array([0, 2, 2, 2])
  mean, clients = evaluation.mean_client_accuracy(correct, segments, 3)
  assert clients == 2
  assert mean == (1.0 + 1 / 3) / 2
