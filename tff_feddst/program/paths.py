"""Where a training run keeps its files under its root directory.

```
root_dir/
  hparams.json            the run's hyperparameters, written once
  checkpoints/            tff.program.FileProgramStateManager: process state + counters
  results/metrics.csv     tff.program.CSVFileReleaseManager, one row per round
  logdir/                 tff.program.TensorBoardReleaseManager event files
  model_weights.npz       the global model weights at the end of the run
  .lock                   held by the run using the directory (`run_lock`)
```
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class RunPaths:
  """The files of the run rooted at `root`."""

  root: Path

  @classmethod
  def of(cls, root_dir: str | os.PathLike) -> 'RunPaths':
    return cls(Path(root_dir).expanduser())

  @property
  def hparams(self) -> Path:
    return self.root / 'hparams.json'

  @property
  def checkpoints(self) -> Path:
    return self.root / 'checkpoints'

  @property
  def metrics_csv(self) -> Path:
    return self.root / 'results' / 'metrics.csv'

  @property
  def logdir(self) -> Path:
    return self.root / 'logdir'

  @property
  def model_weights(self) -> Path:
    return self.root / 'model_weights.npz'

  @property
  def lock(self) -> Path:
    return self.root / '.lock'


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
  """Writes `data` to `path` so that readers see the old or the new file, never half.

  The bytes go to a temporary file in the same directory, which then replaces
  `path` (`os.replace` is atomic on POSIX file systems).
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(data, str):
    data = data.encode('utf-8')
  tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def savez_atomic(path: str | os.PathLike, **arrays) -> None:
  """`numpy.savez` written with `write_atomic`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_atomic(path, buffer.getvalue())
