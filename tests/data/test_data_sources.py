"""Readers of local dataset files, exercised on tiny files written in the real formats."""

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tff_feddst.data import sources
from tff_feddst.data.sources import CorruptDatasetError, DatasetNotFoundError

IDX_NAMES = {
    'x_train': 'train-images-idx3-ubyte',
    'y_train': 'train-labels-idx1-ubyte',
    'x_test': 't10k-images-idx3-ubyte',
    'y_test': 't10k-labels-idx1-ubyte',
}


@pytest.fixture(autouse=True)
def isolated_default_places(monkeypatch, tmp_path):
  """Points HOME (Keras cache) and the Debian dir into tmp so real files can't interfere."""
  home = tmp_path / 'home'
  home.mkdir()
  monkeypatch.setenv('HOME', str(home))
  monkeypatch.delenv('KERAS_HOME', raising=False)
  monkeypatch.setattr(sources, 'DEBIAN_FASHION_MNIST_DIR',
                      tmp_path / 'debian-fashion-mnist')
  return home


def idx_bytes(array: np.ndarray) -> bytes:
  magic = 2051 if array.ndim == 3 else 2049
  header = struct.pack('>i', magic) + struct.pack(f'>{array.ndim}i', *
                                                  array.shape)
  return header + array.astype(np.uint8).tobytes()


def write_idx_set(directory: Path, arrays: dict, gz: bool) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  for key, stem in IDX_NAMES.items():
    data = idx_bytes(arrays[key])
    if gz:
      (directory / f'{stem}.gz').write_bytes(gzip.compress(data))
    else:
      (directory / stem).write_bytes(data)


def tiny_arrays(seed: int = 0, h: int = 4, w: int = 5) -> dict:
  rng = np.random.default_rng(seed)
  return {
      'x_train': rng.integers(0, 256, (6, h, w), dtype=np.uint8),
      'y_train': np.array([0, 1, 2, 9, 4, 5], dtype=np.uint8),
      'x_test': rng.integers(0, 256, (3, h, w), dtype=np.uint8),
      'y_test': np.array([7, 8, 9], dtype=np.uint8)
  }


def assert_matches(data: sources.CentralizedData, arrays: dict) -> None:
  for split in ('train', 'test'):
    x, y = getattr(data, f'x_{split}'), getattr(data, f'y_{split}')
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_allclose(x[..., 0],
                               arrays[f'x_{split}'] / 255.0,
                               rtol=1e-6)
    assert x.shape[-1] == 1
    np.testing.assert_array_equal(y, arrays[f'y_{split}'])


@pytest.mark.parametrize('gz', [False, True])
def test_mnist_idx_plain_and_gzip(tmp_path, gz):
  arrays = tiny_arrays()
  write_idx_set(tmp_path / 'd', arrays, gz)
  data = sources.load_mnist(tmp_path / 'd')
  assert_matches(data, arrays)
  assert data.num_classes == 10 and data.name == 'mnist'


def test_mnist_in_named_subdir_and_mixed_compression(tmp_path):
  arrays = tiny_arrays(1)
  write_idx_set(tmp_path / 'd' / 'mnist', arrays, gz=True)
  plain = tmp_path / 'd' / 'mnist' / IDX_NAMES['y_test']
  plain.write_bytes(idx_bytes(arrays['y_test']))
  (tmp_path / 'd' / 'mnist' / f'{IDX_NAMES["y_test"]}.gz').unlink()
  assert_matches(sources.load_mnist(tmp_path / 'd'), arrays)


def test_mnist_keras_npz_in_cache(isolated_default_places):
  rng = np.random.default_rng(2)
  arrays = {
      'x_train': rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
      'y_train': np.array([3, 1, 4, 1], dtype=np.uint8),
      'x_test': rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
      'y_test': np.array([5, 9], dtype=np.uint8)
  }
  cache = isolated_default_places / '.keras' / 'datasets'
  cache.mkdir(parents=True)
  np.savez(cache / 'mnist.npz', **arrays)
  data = sources.load_mnist()
  assert_matches(data, arrays)
  assert data.x_train.shape == (4, 28, 28, 1)


def test_npz_missing_key_is_corrupt(tmp_path):
  (tmp_path / 'd').mkdir()
  np.savez(tmp_path / 'd' / 'mnist.npz', x_train=np.zeros((1, 2, 2), np.uint8))
  with pytest.raises(CorruptDatasetError, match='missing arrays') as err:
    sources.load_mnist(tmp_path / 'd')
  assert str(tmp_path / 'd' / 'mnist.npz') in str(err.value)


def test_fashion_mnist_from_keras_cache_and_debian_dir(isolated_default_places,
                                                       tmp_path):
  arrays = tiny_arrays(3)
  write_idx_set(sources.DEBIAN_FASHION_MNIST_DIR, arrays, gz=True)
  data = sources.load_fashion_mnist()
  assert_matches(data, arrays)
  assert data.name == 'fashion_mnist'
  # The Keras cache is searched before the Debian directory.
  keras_arrays = tiny_arrays(4)
  write_idx_set(isolated_default_places / '.keras' / 'datasets' /
                'fashion-mnist',
                keras_arrays,
                gz=True)
  assert_matches(sources.load_fashion_mnist(), keras_arrays)


def test_truncated_idx_is_corrupt(tmp_path):
  write_idx_set(tmp_path / 'd', tiny_arrays(), gz=False)
  bad = tmp_path / 'd' / IDX_NAMES['x_train']
  bad.write_bytes(bad.read_bytes()[:-7])
  with pytest.raises(CorruptDatasetError, match='truncated') as err:
    sources.load_mnist(tmp_path / 'd')
  assert str(bad) in str(err.value)


def test_bad_magic_is_corrupt(tmp_path):
  write_idx_set(tmp_path / 'd', tiny_arrays(), gz=True)
  bad = tmp_path / 'd' / f'{IDX_NAMES["y_test"]}.gz'
  bad.write_bytes(gzip.compress(struct.pack('>ii', 2051, 3) + b'\x01\x02\x03'))
  with pytest.raises(CorruptDatasetError,
                     match='magic number 2051, expected 2049') as err:
    sources.load_fashion_mnist(tmp_path / 'd')
  assert str(bad) in str(err.value)


def test_bad_gzip_is_corrupt(tmp_path):
  write_idx_set(tmp_path / 'd', tiny_arrays(), gz=True)
  bad = tmp_path / 'd' / f'{IDX_NAMES["x_test"]}.gz'
  bad.write_bytes(b'this is not gzip')
  with pytest.raises(CorruptDatasetError, match='gzip') as err:
    sources.load_mnist(tmp_path / 'd')
  assert str(bad) in str(err.value)


def test_image_label_count_mismatch_is_corrupt(tmp_path):
  arrays = tiny_arrays()
  arrays['y_train'] = arrays['y_train'][:5]
  write_idx_set(tmp_path / 'd', arrays, gz=False)
  with pytest.raises(CorruptDatasetError,
                     match='6 images but .* 5 labels') as err:
    sources.load_mnist(tmp_path / 'd')
  assert IDX_NAMES['x_train'] in str(err.value) and IDX_NAMES['y_train'] in str(
      err.value)


def test_fashion_mnist_not_found_lists_every_path(tmp_path,
                                                  isolated_default_places):
  given = tmp_path / 'nothing-here'
  given.mkdir()
  with pytest.raises(DatasetNotFoundError) as err:
    sources.load_fashion_mnist(given)
  message = str(err.value)
  for path in (given, given / 'fashion_mnist', given / 'fashion-mnist',
               isolated_default_places / '.keras' / 'datasets' /
               'fashion-mnist', tmp_path / 'debian-fashion-mnist'):
    assert f'  {path}  (' in message
  assert 'Fashion-MNIST' in message
  assert 'apt-get install dataset-fashion-mnist' in message
  assert '--data_dir' in message
  assert isinstance(err.value, FileNotFoundError)


def test_mnist_not_found_lists_every_path(tmp_path, isolated_default_places):
  with pytest.raises(DatasetNotFoundError) as err:
    sources.load_mnist(tmp_path / 'nope')
  message = str(err.value)
  keras = isolated_default_places / '.keras' / 'datasets'
  for path in (tmp_path / 'nope', tmp_path / 'nope' / 'mnist', keras):
    assert f'  {path}  (' in message
  assert 'train-images-idx3-ubyte' in message and 'mnist.npz' in message


def test_partial_idx_set_names_missing_files(tmp_path):
  write_idx_set(tmp_path / 'd', tiny_arrays(), gz=False)
  (tmp_path / 'd' / IDX_NAMES['y_test']).unlink()
  with pytest.raises(DatasetNotFoundError,
                     match='IDX files missing: t10k-labels-idx1-ubyte'):
    sources.load_mnist(tmp_path / 'd')


# ---------------------------------------------------------------------------
# CIFAR.


def cifar_batch(n: int, seed: int, label_key: bytes,
                num_classes: int) -> tuple[bytes, dict]:
  rng = np.random.default_rng(seed)
  batch = {
      b'batch_label': b'tiny',
      label_key: rng.integers(0, num_classes, n).tolist(),
      b'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8)
  }
  return pickle.dumps(batch, protocol=2), batch


def expected_images(data: np.ndarray) -> np.ndarray:
  """Row layout: 1024 red, then green, then blue values, each row-major over 32x32."""
  n = data.shape[0]
  out = np.empty((n, 32, 32, 3), np.float32)
  for ch in range(3):
    out[..., ch] = data[:, ch * 1024:(ch + 1) * 1024].reshape(n, 32, 32) / 255.0
  return out


def write_cifar(root: Path, top: str, files: dict, archive: str | None) -> None:
  if archive is None:
    (root / top).mkdir(parents=True)
    for name, raw in files.items():
      (root / top / name).write_bytes(raw)
    return
  root.mkdir(parents=True, exist_ok=True)
  with tarfile.open(root / archive, 'w:gz') as tar:
    for name, raw in files.items():
      info = tarfile.TarInfo(f'{top}/{name}')
      info.size = len(raw)
      tar.addfile(info, io.BytesIO(raw))


@pytest.mark.parametrize('archive', [None, 'cifar-10-python.tar.gz'])
def test_cifar10_dir_and_archive(tmp_path, archive):
  files, batches = {}, {}
  for i, name in enumerate([f'data_batch_{k}' for k in range(1, 6)] +
                           ['test_batch']):
    files[name], batches[name] = cifar_batch(2, i, b'labels', 10)
  write_cifar(tmp_path / 'd', 'cifar-10-batches-py', files, archive)
  data = sources.load_cifar10(tmp_path / 'd')
  train = [batches[f'data_batch_{k}'] for k in range(1, 6)]
  np.testing.assert_allclose(data.x_train,
                             expected_images(
                                 np.concatenate([b[b'data'] for b in train])),
                             rtol=1e-6)
  np.testing.assert_array_equal(data.y_train,
                                sum((b[b'labels'] for b in train), []))
  np.testing.assert_allclose(data.x_test,
                             expected_images(batches['test_batch'][b'data']),
                             rtol=1e-6)
  assert data.x_train.shape == (10, 32, 32, 3) and data.y_test.dtype == np.int32
  assert data.num_classes == 10


@pytest.mark.parametrize('archive', [None, 'cifar-100-python.tar.gz'])
def test_cifar100_fine_labels(tmp_path, archive):
  train_raw, train = cifar_batch(3, 0, b'fine_labels', 100)
  test_raw, test = cifar_batch(2, 1, b'fine_labels', 100)
  write_cifar(tmp_path / 'd' / 'cifar100', 'cifar-100-python', {
      'train': train_raw,
      'test': test_raw
  }, archive)
  data = sources.load_cifar100(tmp_path / 'd')
  np.testing.assert_array_equal(data.y_train, train[b'fine_labels'])
  np.testing.assert_array_equal(data.y_test, test[b'fine_labels'])
  np.testing.assert_allclose(data.x_test,
                             expected_images(test[b'data']),
                             rtol=1e-6)
  assert data.num_classes == 100


def test_cifar10_in_keras_cache(isolated_default_places):
  files = {
      name: cifar_batch(1, i, b'labels', 10)[0]
      for i, name in enumerate([f'data_batch_{k}' for k in range(1, 6)] +
                               ['test_batch'])
  }
  write_cifar(isolated_default_places / '.keras' / 'datasets',
              'cifar-10-batches-py', files, None)
  assert sources.load('cifar10').x_train.shape == (5, 32, 32, 3)


def test_cifar_missing_label_key_is_corrupt(tmp_path):
  raw, _ = cifar_batch(2, 0, b'coarse_labels', 20)
  write_cifar(tmp_path, 'cifar-100-python', {'train': raw, 'test': raw}, None)
  with pytest.raises(CorruptDatasetError, match='missing keys') as err:
    sources.load_cifar100(tmp_path)
  assert str(tmp_path / 'cifar-100-python' / 'train') in str(err.value)


def test_cifar_garbage_pickle_and_archive_member_missing(tmp_path):
  write_cifar(tmp_path / 'a', 'cifar-100-python', {
      'train': b'garbage',
      'test': b'x'
  }, None)
  with pytest.raises(CorruptDatasetError, match='cannot unpickle'):
    sources.load_cifar100(tmp_path / 'a')
  raw, _ = cifar_batch(2, 0, b'fine_labels', 100)
  write_cifar(tmp_path / 'b', 'cifar-100-python', {'train': raw},
              'cifar-100-python.tar.gz')
  with pytest.raises(CorruptDatasetError, match='lacks cifar-100-python/test'):
    sources.load_cifar100(tmp_path / 'b')


def test_cifar_pickle_cannot_run_code(tmp_path):

  class Exploit:

    def __reduce__(self):
      return (Path.touch, (tmp_path / 'pwned',))

  evil = pickle.dumps({b'data': Exploit(), b'fine_labels': [0]})
  write_cifar(tmp_path / 'd', 'cifar-100-python', {
      'train': evil,
      'test': evil
  }, None)
  with pytest.raises(CorruptDatasetError, match='refusing to load'):
    sources.load_cifar100(tmp_path / 'd')
  assert not (tmp_path / 'pwned').exists()


def test_cifar10_not_found_lists_every_path(tmp_path, isolated_default_places):
  with pytest.raises(DatasetNotFoundError) as err:
    sources.load_cifar10(tmp_path)
  message = str(err.value)
  keras = isolated_default_places / '.keras' / 'datasets'
  for path in (tmp_path / 'cifar-10-batches-py', tmp_path,
               tmp_path / 'cifar-10-python.tar.gz', tmp_path / 'cifar10' /
               'cifar-10-python.tar.gz', keras / 'cifar-10-batches-py',
               keras / 'cifar-10-batches-py.tar.gz'):
    assert f'  {path}  (' in message
  assert 'CIFAR-10' in message and 'data_batch_1' in message


# ---------------------------------------------------------------------------
# Embedded data and the dispatcher.


def test_digits():
  data = sources.load_digits()
  assert data.x_train.shape[1:] == (8, 8, 1)
  assert len(data.x_train) + len(data.x_test) == 1797 and len(
      data.x_test) == 360
  assert data.num_classes == 10 and set(np.unique(data.y_test)) == set(
      range(10))
  assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
  again = sources.load_digits()
  np.testing.assert_array_equal(data.y_train, again.y_train)


def test_synthetic_is_seeded_and_learnable():
  a = sources.make_synthetic(600, image_shape=(8, 8, 1), seed=3)
  b = sources.make_synthetic(600, image_shape=(8, 8, 1), seed=3)
  c = sources.make_synthetic(600, image_shape=(8, 8, 1), seed=4)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  assert not np.array_equal(a.x_train, c.x_train)
  assert len(a.x_test) == 120 and a.x_train.dtype == np.float32
  assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
  # A nearest-class-mean classifier fit on train must do far better than chance.
  flat = a.x_train.reshape(len(a.x_train), -1)
  means = np.stack([flat[a.y_train == k].mean(0) for k in range(10)])
  test = a.x_test.reshape(len(a.x_test), -1)
  pred = np.argmin(((test[:, None, :] - means[None])**2).sum(-1), axis=1)
  assert (pred == a.y_test).mean() > 0.9


def test_load_dispatch(tmp_path):
  assert sources.load('digits').name == 'digits'
  assert sources.load('synthetic').num_classes == 10
  arrays = tiny_arrays()
  write_idx_set(tmp_path, arrays, gz=True)
  assert_matches(sources.load('Fashion-MNIST', tmp_path), arrays)
  with pytest.raises(ValueError,
                     match='mnist, fashion_mnist, cifar10, cifar100, digits, '
                     'synthetic'):
    sources.load('imagenet')


def test_locate_finds_files_without_reading_them(tmp_path):
  """The launcher's early check: where the files are, not whether they parse."""
  write_idx_set(tmp_path / 'mnist', tiny_arrays(), gz=False)
  bad = tmp_path / 'mnist' / IDX_NAMES['x_train']
  bad.write_bytes(bad.read_bytes()[:-7])
  found = sources.locate('mnist', tmp_path)
  assert found.path == tmp_path / 'mnist' and found.name == 'mnist'
  with pytest.raises(CorruptDatasetError, match='truncated'):
    found.read()
  assert sources.locate('digits').path is None


@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist', 'cifar10',
                                  'cifar100'])
def test_early_check_refuses_what_the_loader_refuses(tmp_path, name):
  from tff_feddst.data import presence  # pylint: disable=g-import-not-at-top
  with pytest.raises(DatasetNotFoundError) as by_loader:
    sources.load(name, tmp_path / 'none')
  with pytest.raises(DatasetNotFoundError) as early:
    presence.check(name, tmp_path / 'none')
  assert str(early.value) == str(by_loader.value)
