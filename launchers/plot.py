r"""Plots accuracy against cumulative uplink and against rounds for training runs.

  uv run python launchers/plot.py --run_dirs /tmp/a,/tmp/b --output_dir /tmp/plots

Reads each run's `results/metrics.csv` and `hparams.json` (written by
launchers/train.py) and writes, atomically:

* accuracy_vs_uplink.png: accuracy versus cumulative uplink (MB, 10**6 bytes);
* accuracy_vs_rounds.png: accuracy versus rounds;

each with two panels, the mean of the clients' local test accuracies (the
paper's metric) and the global model's accuracy on the whole test set. One line
per run, labelled by its algorithm and sparsity S. Only evaluated rounds carry
points. Needs no TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# TF-free: --help, flag errors and plots never load TensorFlow.
from tff_feddst.program import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_feddst.program import paths  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_list('run_dirs', None, 'Comma-separated run root directories.')
flags.DEFINE_string('output_dir', 'plots', 'Where to write the PNG files.')
flags.mark_flag_as_required('run_dirs')
FLAGS = flags.FLAGS

PANELS = (('test/client_mean_accuracy', 'mean client-local test accuracy'),
          ('test/accuracy', 'global test accuracy'))
X_AXES = {
    'uplink': ('round/cumulative_uplink_bytes', 'cumulative uplink (MB)',
               1.0 / metrics.BYTES_PER_MB),
    'rounds': ('round', 'round', 1.0),
}


class RunError(ValueError):
  """A run directory lacks what the plots need."""


def _float(text: str | None) -> float | None:
  try:
    return float(text) if text not in (None, '') else None
  except ValueError:
    return None


def read_run(run_dir: str | os.PathLike) -> tuple[str, list[dict]]:
  """(label, evaluated rows as {column: float}) of one run."""
  run_dir = Path(run_dir)
  run_paths = paths.RunPaths.of(run_dir)
  csv_path, hparams_path = run_paths.metrics_csv, run_paths.hparams
  for path in (csv_path, hparams_path):
    if not path.is_file():
      raise RunError(f'{path} not found: is {run_dir} a training run '
                     '(launchers/train.py --root_dir)?')
  with open(hparams_path, encoding='utf-8') as f:
    hparams = json.load(f)
  label = f'{hparams.get("algorithm", "?")} (S={hparams.get("sparsity", 0):g})'
  with open(csv_path, newline='', encoding='utf-8') as f:
    rows = [{k: _float(v) for k, v in row.items()} for row in csv.DictReader(f)]
  rows = sorted((r for r in rows if r.get(PANELS[0][0]) is not None),
                key=lambda r: r['round'])
  return label, rows


def _figure(runs: list[tuple[str, list[dict]]], x_axis: str) -> bytes:
  # Imported here: --help and flag errors need not wait for matplotlib.
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  column, x_label, scale = X_AXES[x_axis]
  fig, axes = plt.subplots(1, len(PANELS), figsize=(11, 4.2), sharey=True)
  for ax, (metric, title) in zip(axes, PANELS):
    for label, rows in runs:
      points = [(r[column] * scale, r[metric]) for r in rows
                if r.get(column) is not None and r.get(metric) is not None]
      if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker='.', label=label)
    ax.set_title(title)
    ax.set_xlabel(x_label)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel('accuracy')
  axes[0].legend(loc='lower right', fontsize='small')
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=120)
  plt.close(fig)
  return buffer.getvalue()


def plot_runs(run_dirs: list[str], output_dir: str | os.PathLike) -> list[Path]:
  """Writes the two PNG files for `run_dirs` into `output_dir`; returns their paths."""
  runs = [read_run(d) for d in run_dirs]
  labels = [label for label, _ in runs]
  runs = [(f'{label} [{Path(d).name}]' if labels.count(label) > 1 else label,
           rows) for (label, rows), d in zip(runs, run_dirs)]
  output_dir = Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  written = []
  for x_axis in X_AXES:
    path = output_dir / f'accuracy_vs_{x_axis}.png'
    paths.write_atomic(path, _figure(runs, x_axis))
    written.append(path)
  return written


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  try:
    written = plot_runs(FLAGS.run_dirs, FLAGS.output_dir)
  except RunError as e:
    sys.exit(f'plot.py: error: {e}')
  for path in written:
    logging.info('Wrote %s', path)


if __name__ == '__main__':
  app.run(main)
