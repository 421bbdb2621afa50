"""Export sizes of the paper CNN at S=0.8 (magnitude mask of a random init).

  uv run python benchmarks/export_sizes.py
"""

import tempfile

import numpy as np
import tensorflow as tf

from tff_feddst import export
from tff_feddst import models


def main():
  tf.keras.utils.set_random_seed(0)
  wrapped = models.make_prunable(models.mnist_cnn())
  models.apply_initial_masks(wrapped, 0.8, 'feddst_erk')
  x = np.random.default_rng(0).random((64, 28, 28, 1)).astype(np.float32)
  with tempfile.TemporaryDirectory() as out:
    print(export.size_table(export.export_model(models.strip(wrapped), out, x)))


if __name__ == '__main__':
  main()
