"""Readers for centralized image-classification datasets stored in local files.

Nothing here touches the network: every loader looks for the standard
distribution files in a caller-given directory and in the usual cache places,
and raises `DatasetNotFoundError` (listing every path tried and how to get the
files) or `CorruptDatasetError` (naming the file and the defect) otherwise.
Finding (`locate`) is apart from reading so that a command line can refuse
missing files before TensorFlow loads; this module never imports TensorFlow.

Why one file of ~550 lines: the five readers share the search (`_Search`,
`_candidate_dirs`), the error types and the checks of the arrays they
return; each reader is 40-120 lines of its own format.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import io
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from absl import logging

# Debian's `dataset-fashion-mnist` package installs the four gzipped IDX files
# (train-images-idx3-ubyte.gz, ...) here.
DEBIAN_FASHION_MNIST_DIR = Path('/usr/share/datasets/fashion-mnist')

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions.
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension.
_IDX_FILES = {
    'x_train': 'train-images-idx3-ubyte',
    'y_train': 'train-labels-idx1-ubyte',
    'x_test': 't10k-images-idx3-ubyte',
    'y_test': 't10k-labels-idx1-ubyte',
}
_IDX_FILE_LIST = ', '.join(f'{n}[.gz]' for n in _IDX_FILES.values())
_CIFAR_IMAGE_BYTES = 32 * 32 * 3
_DIGITS_SPLIT_SEED = 0
_SYNTHETIC_DEFAULT_EXAMPLES = 2000


class DatasetNotFoundError(FileNotFoundError):
  """No usable copy of a dataset exists in any searched location."""


class CorruptDatasetError(ValueError):
  """A dataset file exists but its contents are not in the expected format."""


@dataclasses.dataclass(frozen=True, eq=False)
class CentralizedData:
  """A train/test split: float32 images in [0, 1] (N, H, W, C), int32 labels (N,)."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str

  def __post_init__(self) -> None:
    for split in ('train', 'test'):
      x, y = getattr(self, f'x_{split}'), getattr(self, f'y_{split}')
      if x.dtype != np.float32 or x.ndim != 4:
        raise ValueError(
            f'{self.name}: x_{split} must be float32 (N, H, W, C), '
            f'got {x.dtype} {x.shape}')
      if y.dtype != np.int32 or y.shape != (x.shape[0],):
        raise ValueError(f'{self.name}: y_{split} must be int32 of shape '
                         f'({x.shape[0]},), got {y.dtype} {y.shape}')
    if self.x_train.shape[1:] != self.x_test.shape[1:]:
      raise ValueError(
          f'{self.name}: train images {self.x_train.shape[1:]} and test '
          f'images {self.x_test.shape[1:]} differ in shape')

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.x_train.shape[1:])


# ---------------------------------------------------------------------------
# Search bookkeeping.


class _Search:
  """Collects what was tried so a failure can list every path."""

  def __init__(self, display_name: str, how_to_get: str):
    self.display_name = display_name
    self.how_to_get = how_to_get
    self.tried: list[str] = []

  def note(self, path: Path, why: str) -> None:
    self.tried.append(f'  {path}  ({why})')

  def fail(self) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f'{self.display_name} not found. Paths tried:\n' +
        '\n'.join(self.tried) + f'\n{self.how_to_get}')


def _keras_datasets_dir() -> Path:
  """Keras' download cache: $KERAS_HOME/datasets, else ~/.keras/datasets."""
  keras_home = os.environ.get('KERAS_HOME') or os.path.join(
      os.path.expanduser('~'), '.keras')
  return Path(keras_home) / 'datasets'


def _candidate_dirs(data_dir: str | os.PathLike | None, subdirs: Sequence[str],
                    defaults: Sequence[Path]) -> list[Path]:
  dirs: list[Path] = []
  if data_dir is not None:
    base = Path(data_dir).expanduser()
    dirs += [base] + [base / s for s in subdirs]
  dirs += defaults
  return list(dict.fromkeys(dirs))


@dataclasses.dataclass(frozen=True)
class DatasetFiles:
  """Where `locate` found a dataset (`path`; None for embedded data), and
  how to read it: `read()` parses the files (`CorruptDatasetError` if they
  are damaged)."""

  name: str
  path: Path | None
  data_dir: str | os.PathLike | None
  _reader: Callable[[], CentralizedData] = dataclasses.field(repr=False)

  def read(self) -> CentralizedData:
    if self.path is not None:
      if self.data_dir is not None and not self.path.is_relative_to(
          Path(self.data_dir).expanduser()):
        logging.warning('%s: nothing usable in --data_dir=%s; using %s',
                        self.name, self.data_dir, self.path)
      logging.info('%s: reading %s', self.name, self.path)
    return self._reader()


# ---------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST).


def _read_maybe_gzip(path: Path) -> bytes:
  raw = path.read_bytes()
  if path.suffix != '.gz':
    return raw
  try:
    return gzip.decompress(raw)
  except gzip.BadGzipFile as e:
    raise CorruptDatasetError(f'{path}: not a valid gzip file ({e})') from e
  except (EOFError, zlib.error) as e:
    raise CorruptDatasetError(
        f'{path}: truncated or damaged gzip stream ({e})') from e


def read_idx(path: str | os.PathLike, expected_magic: int) -> np.ndarray:
  """Reads an unsigned-byte IDX file (plain or .gz), validating its header and size."""
  path = Path(path)
  data = _read_maybe_gzip(path)
  if len(data) < 4:
    raise CorruptDatasetError(
        f'{path}: {len(data)} bytes is too short for an IDX header')
  (magic,) = struct.unpack('>i', data[:4])
  if magic != expected_magic:
    kind = 'images' if expected_magic == _IDX_IMAGES_MAGIC else 'labels'
    raise CorruptDatasetError(f'{path}: bad IDX magic number {magic}, expected '
                              f'{expected_magic} (ubyte {kind})')
  ndim = magic & 0xFF
  header_bytes = 4 + 4 * ndim
  if len(data) < header_bytes:
    raise CorruptDatasetError(
        f'{path}: truncated IDX header ({len(data)} bytes, '
        f'need {header_bytes} for {ndim} dimensions)')
  dims = struct.unpack(f'>{ndim}i', data[4:header_bytes])
  if any(d <= 0 for d in dims[1:]) or dims[0] < 0:
    raise CorruptDatasetError(f'{path}: invalid IDX dimensions {dims}')
  expected = header_bytes + int(np.prod(dims, dtype=np.int64))
  if len(data) != expected:
    problem = 'truncated' if len(data) < expected else 'has trailing bytes'
    raise CorruptDatasetError(
        f'{path}: {problem}: {len(data)} bytes, expected {expected} '
        f'for dimensions {dims}')
  return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(dims)


def _idx_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
  """Maps split keys to the IDX files present in `directory`; also lists missing names."""
  present, missing = {}, []
  for key, stem in _IDX_FILES.items():
    for candidate in (directory / stem, directory / f'{stem}.gz'):
      if candidate.is_file():
        present[key] = candidate
        break
    else:
      missing.append(stem)
  return present, missing


def _images_and_labels(x: np.ndarray, y: np.ndarray, num_classes: int,
                       x_src: str, y_src: str) -> tuple[np.ndarray, np.ndarray]:
  """Validates uint8 images (N, H, W[, C]) and labels (N,); converts to our format."""
  if x.shape[0] != y.shape[0]:
    raise CorruptDatasetError(
        f'{x_src} holds {x.shape[0]} images but {y_src} holds '
        f'{y.shape[0]} labels')
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise CorruptDatasetError(
        f'{y_src}: label values span [{y.min()}, {y.max()}], '
        f'expected [0, {num_classes - 1}]')
  if x.ndim == 3:
    x = x[..., np.newaxis]
  return (x.astype(np.float32) / 255.0), y.astype(np.int32)


def _load_idx_dir(present: dict[str, Path], num_classes: int,
                  name: str) -> CentralizedData:
  arrays = {}
  for split in ('train', 'test'):
    xp, yp = present[f'x_{split}'], present[f'y_{split}']
    arrays[f'x_{split}'], arrays[f'y_{split}'] = _images_and_labels(
        read_idx(xp, _IDX_IMAGES_MAGIC), read_idx(yp, _IDX_LABELS_MAGIC),
        num_classes, str(xp), str(yp))
  return CentralizedData(num_classes=num_classes, name=name, **arrays)


def _load_keras_npz(path: Path, name: str) -> CentralizedData:
  keys = ('x_train', 'y_train', 'x_test', 'y_test')
  try:
    with np.load(path, allow_pickle=False) as npz:
      raw = {k: npz[k] for k in keys if k in npz.files}
      present = sorted(npz.files)
  except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
    raise CorruptDatasetError(
        f'{path}: not a readable .npz archive ({e})') from e
  missing = [k for k in keys if k not in raw]
  if missing:
    raise CorruptDatasetError(
        f'{path}: missing arrays {missing} (has {present})')
  arrays = {}
  for split in ('train', 'test'):
    x, y = raw[f'x_{split}'], raw[f'y_{split}']
    if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1:
      raise CorruptDatasetError(
          f'{path}: expected x_{split} uint8 (N, H, W) and '
          f'y_{split} (N,), got {x.dtype} {x.shape} and {y.shape}')
    src = f'{path}[x_{split}]', f'{path}[y_{split}]'
    arrays[f'x_{split}'], arrays[f'y_{split}'] = _images_and_labels(
        x, y, 10, *src)
  return CentralizedData(num_classes=10, name=name, **arrays)


def _locate_mnist_like(name: str, search: _Search, dirs: Sequence[Path],
                       npz_name: str | None,
                       data_dir: str | os.PathLike | None) -> DatasetFiles:
  for directory in dirs:
    if not directory.is_dir():
      search.note(directory, 'no such directory')
      continue
    present, missing = _idx_files(directory)
    if not missing:
      return DatasetFiles(name, directory, data_dir,
                          lambda: _load_idx_dir(present, 10, name))
    search.note(directory, 'IDX files missing: ' + ', '.join(missing) + '[.gz]')
    if npz_name is not None:
      npz = directory / npz_name
      if npz.is_file():
        return DatasetFiles(name, npz, data_dir,
                            lambda: _load_keras_npz(npz, name))
      search.note(npz, 'no such file')
  raise search.fail()


def _locate_mnist(data_dir: str | os.PathLike | None) -> DatasetFiles:
  dirs = _candidate_dirs(data_dir, ['mnist'], [_keras_datasets_dir()])
  search = _Search('MNIST', (
      f'Put the four MNIST IDX files ({_IDX_FILE_LIST}) or Keras\' mnist.npz in a '
      'directory and pass --data_dir=DIR, or copy mnist.npz to '
      f'{_keras_datasets_dir()}.'))
  return _locate_mnist_like('mnist', search, dirs, 'mnist.npz', data_dir)


def load_mnist(data_dir: str | os.PathLike | None = None) -> CentralizedData:
  """MNIST from IDX files or Keras' mnist.npz in data_dir[/mnist] or ~/.keras/datasets."""
  return _locate_mnist(data_dir).read()


def _locate_fashion_mnist(data_dir: str | os.PathLike | None) -> DatasetFiles:
  dirs = _candidate_dirs(
      data_dir, ['fashion_mnist', 'fashion-mnist'],
      [_keras_datasets_dir() / 'fashion-mnist', DEBIAN_FASHION_MNIST_DIR])
  search = _Search('Fashion-MNIST', (
      '`apt-get install dataset-fashion-mnist` puts the IDX files in '
      f'{DEBIAN_FASHION_MNIST_DIR}; alternatively download the four IDX files '
      f'({_IDX_FILE_LIST}) from https://github.com/zalandoresearch/fashion-mnist '
      'into a directory and pass --data_dir=DIR.'))
  return _locate_mnist_like('fashion_mnist', search, dirs, None, data_dir)


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None) -> CentralizedData:
  """Fashion-MNIST IDX files from data_dir, the Keras cache or Debian's package dir."""
  return _locate_fashion_mnist(data_dir).read()


# ---------------------------------------------------------------------------
# CIFAR python pickles.


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles only plain containers and numpy arrays, so a file can't run code."""

  # numpy >= 2 pickles name `numpy._core`; numpy 1.x spells it `numpy.core`.
  _ALLOWED = {
      ('numpy.core.multiarray', '_reconstruct'),
      ('numpy.core.multiarray', 'scalar'),
      ('numpy.core.numeric', '_frombuffer'),  # Pickle protocol 5.
      ('numpy', 'ndarray'),
      ('numpy', 'dtype'),
      ('_codecs', 'encode'),  # How protocol 2 spells bytes under Python 3.
  }

  def find_class(self, module: str, name: str):
    module = module.replace('numpy._core', 'numpy.core', 1)
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f'refusing to load {module}.{name}')
    return getattr(importlib.import_module(module), name)


def _unpickle_batch(raw: bytes, source: str,
                    label_key: str) -> tuple[np.ndarray, np.ndarray]:
  """Decodes one CIFAR batch: uint8 data (n, 3072) in CHW order plus labels."""
  try:
    batch = _ArrayUnpickler(io.BytesIO(raw), encoding='bytes').load()
  except Exception as e:  # Any failure to unpickle means the file is not a CIFAR batch.
    raise CorruptDatasetError(
        f'{source}: cannot unpickle ({type(e).__name__}: {e})') from e
  if not isinstance(batch, dict):
    raise CorruptDatasetError(
        f'{source}: expected a pickled dict, got {type(batch).__name__}')
  batch = {
      k.decode('latin1') if isinstance(k, bytes) else k: v
      for k, v in batch.items()
  }
  missing = [k for k in ('data', label_key) if k not in batch]
  if missing:
    raise CorruptDatasetError(
        f'{source}: missing keys {missing} (has {sorted(batch)})')
  data, labels = np.asarray(batch['data']), np.asarray(batch[label_key])
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[
      1] != _CIFAR_IMAGE_BYTES:
    raise CorruptDatasetError(
        f'{source}: expected uint8 data of shape (n, '
        f'{_CIFAR_IMAGE_BYTES}), got {data.dtype} {data.shape}')
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise CorruptDatasetError(
        f'{source}: {label_key} is not a flat list of integers')
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels


@dataclasses.dataclass(frozen=True)
class _CifarLayout:
  name: str
  display_name: str
  num_classes: int
  top_dir: str  # Directory name inside the official archive.
  archives: tuple[str, ...]
  train_files: tuple[str, ...]
  test_file: str
  label_key: str
  how_to_get: str


_CIFAR10 = _CifarLayout(
    'cifar10', 'CIFAR-10', 10, 'cifar-10-batches-py',
    ('cifar-10-python.tar.gz', 'cifar-10-batches-py.tar.gz'),
    tuple(f'data_batch_{i}' for i in range(1, 6)), 'test_batch', 'labels',
    'Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and put '
    'it (or its extracted cifar-10-batches-py/ directory with data_batch_1..5 and test_batch) '
    'in a directory passed as --data_dir=DIR.')
_CIFAR100 = _CifarLayout(
    'cifar100', 'CIFAR-100', 100, 'cifar-100-python',
    ('cifar-100-python.tar.gz',), ('train',), 'test', 'fine_labels',
    'Download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and put '
    'it (or its extracted cifar-100-python/ directory with train and test) in a directory '
    'passed as --data_dir=DIR.')


def _assemble_cifar(
    layout: _CifarLayout, read: Callable[[str], tuple[bytes,
                                                      str]]) -> CentralizedData:
  """Builds CentralizedData from batch files fetched by `read(member) -> (bytes, source)`."""
  arrays = {}
  for split, members in (('train', layout.train_files), ('test',
                                                         (layout.test_file,))):
    xs, ys = [], []
    for member in members:
      raw, source = read(member)
      images, labels = _unpickle_batch(raw, source, layout.label_key)
      x, y = _images_and_labels(images, labels, layout.num_classes, source,
                                source)
      xs.append(x)
      ys.append(y)
    arrays[f'x_{split}'], arrays[f'y_{split}'] = np.concatenate(
        xs), np.concatenate(ys)
  return CentralizedData(num_classes=layout.num_classes,
                         name=layout.name,
                         **arrays)


def _load_cifar_dir(layout: _CifarLayout, directory: Path) -> CentralizedData:

  def read(member: str) -> tuple[bytes, str]:
    return (directory / member).read_bytes(), str(directory / member)

  return _assemble_cifar(layout, read)


def _load_cifar_tar(layout: _CifarLayout, archive: Path) -> CentralizedData:
  """Reads the batches straight out of the .tar.gz (one pass, nothing extracted)."""
  wanted = {
      f'{layout.top_dir}/{m}' for m in (*layout.train_files, layout.test_file)
  }
  contents: dict[str, bytes] = {}
  try:
    with tarfile.open(archive, 'r:gz') as tar:
      for info in tar:
        name = info.name.removeprefix('./')
        if info.isfile() and name in wanted:
          contents[name] = tar.extractfile(info).read()
  except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise CorruptDatasetError(
        f'{archive}: not a readable .tar.gz archive ({e})') from e
  missing = sorted(wanted - contents.keys())
  if missing:
    raise CorruptDatasetError(f'{archive}: archive lacks {", ".join(missing)}')

  def read(member: str) -> tuple[bytes, str]:
    name = f'{layout.top_dir}/{member}'
    return contents[name], f'{archive}:{name}'

  return _assemble_cifar(layout, read)


def _locate_cifar(layout: _CifarLayout,
                  data_dir: str | os.PathLike | None) -> DatasetFiles:
  bases = _candidate_dirs(data_dir, [layout.name], [_keras_datasets_dir()])
  search = _Search(layout.display_name, layout.how_to_get)
  needed = (*layout.train_files, layout.test_file)
  for base in bases:
    for directory in (base / layout.top_dir, base):
      if not directory.is_dir():
        search.note(directory, 'no such directory')
        continue
      missing = [f for f in needed if not (directory / f).is_file()]
      if not missing:
        return DatasetFiles(layout.name, directory, data_dir,
                            lambda: _load_cifar_dir(layout, directory))
      search.note(directory, 'batch files missing: ' + ', '.join(missing))
    for archive in (base / a for a in layout.archives):
      if archive.is_file():
        return DatasetFiles(layout.name, archive, data_dir,
                            lambda: _load_cifar_tar(layout, archive))
      search.note(archive, 'no such file')
  raise search.fail()


def load_cifar10(data_dir: str | os.PathLike | None = None) -> CentralizedData:
  """CIFAR-10 from cifar-10-batches-py/ or cifar-10-python.tar.gz."""
  return _locate_cifar(_CIFAR10, data_dir).read()


def load_cifar100(data_dir: str | os.PathLike | None = None) -> CentralizedData:
  """CIFAR-100 (fine labels) from cifar-100-python/ or cifar-100-python.tar.gz."""
  return _locate_cifar(_CIFAR100, data_dir).read()


# ---------------------------------------------------------------------------
# Embedded data that needs no files.


def load_digits() -> CentralizedData:
  """scikit-learn's bundled 8x8 digits (1,797 images).

    Split: stratified 80/20 (1,437 train / 360 test) by
    `sklearn.model_selection.train_test_split(random_state=0)`, so it is the same
    on every run.
    """
  from sklearn.datasets import load_digits as sk_load_digits
  from sklearn.model_selection import train_test_split

  digits = sk_load_digits()
  x = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
  y = digits.target.astype(np.int32)
  x_train, x_test, y_train, y_test = train_test_split(
      x, y, test_size=0.2, stratify=y, random_state=_DIGITS_SPLIT_SEED)
  return CentralizedData(x_train, y_train, x_test, y_test, 10, 'digits')


def make_synthetic(num_examples: int,
                   *,
                   image_shape: tuple[int, ...] = (28, 28, 1),
                   num_classes: int = 10,
                   seed: int = 0,
                   test_fraction: float = 0.2,
                   noise: float = 0.5) -> CentralizedData:
  """Learnable synthetic data: a fixed random prototype image per class plus noise.

    Labels cycle through the classes before shuffling, so every class is (nearly)
    equally frequent; `test_fraction` of the examples form the test split.
    """
  if num_examples < 2 or not 0 < test_fraction < 1:
    raise ValueError('need num_examples >= 2 and 0 < test_fraction < 1')
  rng = np.random.default_rng(seed)
  prototypes = rng.random((num_classes, *image_shape))
  y = rng.permutation(np.arange(num_examples) % num_classes).astype(np.int32)
  x = prototypes[y] + noise * rng.standard_normal((num_examples, *image_shape))
  x = np.clip(x, 0.0, 1.0).astype(np.float32)
  num_test = min(max(1, round(num_examples * test_fraction)), num_examples - 1)
  return CentralizedData(x[num_test:], y[num_test:], x[:num_test], y[:num_test],
                         num_classes, 'synthetic')


_LOCATORS: dict[str, Callable[[str | os.PathLike | None], DatasetFiles]] = {
    'mnist': _locate_mnist,
    'fashion_mnist': _locate_fashion_mnist,
    'cifar10': lambda data_dir: _locate_cifar(_CIFAR10, data_dir),
    'cifar100': lambda data_dir: _locate_cifar(_CIFAR100, data_dir),
    'digits': lambda data_dir: DatasetFiles('digits', None, data_dir,
                                            load_digits),
    'synthetic': lambda data_dir: DatasetFiles(
        'synthetic', None, data_dir,
        lambda: make_synthetic(_SYNTHETIC_DEFAULT_EXAMPLES)),
}
DATASET_NAMES = tuple(_LOCATORS)


def locate(name: str,
           data_dir: str | os.PathLike | None = None) -> DatasetFiles:
  """Finds a dataset's files by name without reading them.

  Raises:
    DatasetNotFoundError: listing every path tried and how to get the files.
    ValueError: for an unknown name.
  """
  key = name.strip().lower().replace('-', '_')
  if key not in _LOCATORS:
    raise ValueError(
        f'unknown dataset {name!r}; valid names: {", ".join(DATASET_NAMES)}')
  return _LOCATORS[key](data_dir)


def load(name: str,
         data_dir: str | os.PathLike | None = None) -> CentralizedData:
  """Loads a dataset by name ('fashion-mnist' and 'fashion_mnist' are the same)."""
  return locate(name, data_dir).read()
