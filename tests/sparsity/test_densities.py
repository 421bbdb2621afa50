"""Layer densities against independent numpy computations of their definitions."""

import numpy as np
import pytest

from tff_feddst import sparsity

MNIST_CNN = [(5, 5, 1, 10), (5, 5, 10, 20), (5120, 50), (50, 10)]
MNIST_BIASES = [10, 20, 50, 10]
SHAPES = [
    MNIST_CNN,
    [(3, 3, 3, 16), (3, 3, 16, 32), (2048, 128), (128, 10)],
    [(7, 64, 32), (100, 10)],                  # Conv1D + Dense
    [(3, 3, 3, 4, 8), (216, 5)],               # Conv3D + Dense
    [(784, 300), (300, 100), (100, 10)],
]
LEVELS = [0.0, 0.5, 0.8, 0.95, 0.99]


def _sizes(shapes):
  return np.array([np.prod(s) for s in shapes])


@pytest.mark.parametrize('shapes', SHAPES)
@pytest.mark.parametrize('s', LEVELS)
@pytest.mark.parametrize('dist', ['uniform', 'er', 'erk'])
def test_total_live_is_exact_and_within_layers(shapes, s, dist):
  counts = np.array(sparsity.layer_live_counts(shapes, s, dist))
  sizes = _sizes(shapes)
  assert counts.sum() == round((1 - s) * sizes.sum())
  assert np.all(counts >= 0) and np.all(counts <= sizes)


@pytest.mark.parametrize('shapes', SHAPES)
@pytest.mark.parametrize('s', LEVELS[1:])
@pytest.mark.parametrize('dist', ['er', 'erk'])
def test_rigl_densities_follow_scores(shapes, s, dist):
  """Non-dense layers: density = eps * score (±1 weight); dense ones exceed it."""
  counts = np.array(sparsity.layer_live_counts(shapes, s, dist), dtype=float)
  sizes = _sizes(shapes)
  if dist == 'erk':
    score = np.array([np.sum(sh) / np.prod(sh) for sh in shapes])
  else:
    score = np.array([(sh[-2] + sh[-1]) / (sh[-2] * sh[-1]) for sh in shapes])
  sparse = counts < sizes
  assert sparse.any()
  eps = counts[sparse].sum() / (score[sparse] * sizes[sparse]).sum()
  np.testing.assert_allclose(counts[sparse], eps * score[sparse] * sizes[sparse],
                             atol=1.0 + 1e-9)
  assert np.all(eps * score[~sparse] >= 1.0 - 1e-9)


def test_uniform_is_one_minus_s_per_layer():
  d = sparsity.layer_densities(MNIST_CNN, 0.8, 'uniform')
  for di, n in zip(d, _sizes(MNIST_CNN)):
    assert abs(di - 0.2) <= 1.0 / n


def test_zero_sparsity_is_dense():
  for dist in sparsity.DISTRIBUTIONS:
    assert sparsity.layer_densities(MNIST_CNN, 0.0, dist) == [1.0] * 4


def test_erk_mnist_cnn_matches_rigl_shape():
  """RigL's ERK keeps the last layer dense and makes conv2 ~92% sparse."""
  d = sparsity.layer_densities(MNIST_CNN, 0.8, 'erk')
  assert d[3] == 1.0
  assert 0.07 < d[1] < 0.09


@pytest.mark.parametrize('s', LEVELS[1:])
def test_feddst_erk_matches_reference_formula(s):
  sizes = _sizes(MNIST_CNN) + np.array(MNIST_BIASES)
  layer_s = np.array([1 - np.sum(sh) / np.prod(sh) for sh in MNIST_CNN])
  layer_s = layer_s * s * sizes.sum() / (layer_s * sizes).sum()
  # The parameter-weighted mean sparsity (biases counted) is S.
  assert np.isclose((layer_s * sizes).sum() / sizes.sum(), s)
  # Past sparsity 1 a layer keeps one weight rather than none.
  expected = np.maximum(np.round((1 - np.minimum(layer_s, 1)) *
                                 _sizes(MNIST_CNN)), 1)
  got = sparsity.layer_live_counts(MNIST_CNN, s, 'feddst_erk',
                                   bias_sizes=MNIST_BIASES)
  np.testing.assert_array_equal(got, expected)


def test_feddst_erk_mnist_cnn_is_nearly_uniform():
  d = sparsity.layer_densities(MNIST_CNN, 0.8, 'feddst_erk',
                               bias_sizes=MNIST_BIASES)
  np.testing.assert_allclose(1 - np.array(d), [0.748, 0.81, 0.80, 0.718],
                             atol=0.005)


@pytest.mark.parametrize('args, match', [
    (([(3, 3)], 1.0, 'erk'), 'sparsity'),
    (([(3, 3)], -0.1, 'erk'), 'sparsity'),
    (([(3, 3)], 0.5, 'nope'), 'distribution'),
    (([], 0.5, 'erk'), 'No prunable'),
    (([(5,)], 0.5, 'erk'), 'not a prunable kernel'),
])
def test_bad_arguments(args, match):
  with pytest.raises(ValueError, match=match):
    sparsity.layer_live_counts(*args)
