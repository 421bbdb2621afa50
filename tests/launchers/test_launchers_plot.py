"""launchers/plot.py on two hand-made run directories (it reads only
hparams.json and results/metrics.csv)."""

import csv
import json

from matplotlib import image
import numpy as np

from launcher_helpers import PLOT, run_script

# matplotlib's first two line colours (its default cycle), as RGB in [0, 1].
LINE_COLOURS = {'feddst': np.array([31, 119, 180]) / 255,
                'fedavg': np.array([255, 127, 14]) / 255}


def write_run(run_dir, algorithm, sparsity, slope):
  (run_dir / 'results').mkdir(parents=True)
  (run_dir / 'hparams.json').write_text(json.dumps(
      dict(algorithm=algorithm, sparsity=sparsity)))
  with open(run_dir / 'results' / 'metrics.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['round', 'round/cumulative_uplink_bytes',
                     'test/accuracy', 'test/client_mean_accuracy'])
    for r in range(1, 21):
      acc = f'{min(0.95, slope * r):.3f}' if r % 2 == 0 else ''
      writer.writerow([r, int(r * 1.5e6 * (1 - sparsity)), acc, acc])


def test_plot_writes_pngs(tmp_path):
  write_run(tmp_path / 'a', 'feddst', 0.8, 0.04)
  write_run(tmp_path / 'b', 'fedavg', 0.0, 0.03)
  out = tmp_path / 'plots'
  result = run_script(PLOT, f'--run_dirs={tmp_path / "a"},{tmp_path / "b"}',
                      f'--output_dir={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  names = sorted(p.name for p in out.iterdir())
  assert names == ['accuracy_vs_rounds.png', 'accuracy_vs_uplink.png']
  for name in names:
    pixels = image.imread(out / name)[..., :3]
    height, width = pixels.shape[:2]
    assert (height, width) == (504, 1320)  # 11 x 4.2 inches at 120 dpi.
    # Each run is a line in the right-hand panel (the legend is in the
    # left one): its colour spans a stretch of columns there.
    right = pixels[:, width // 2:]
    for run, colour in LINE_COLOURS.items():
      drawn = np.all(np.abs(right - colour) < 0.1, axis=-1)
      columns = np.flatnonzero(drawn.any(axis=0))
      assert columns.size > 0.04 * width, (name, run, columns.size)


def test_plot_names_a_directory_that_is_not_a_run(tmp_path):
  result = run_script(PLOT, f'--run_dirs={tmp_path}',
                      f'--output_dir={tmp_path / "plots"}')
  assert result.returncode != 0
  assert 'metrics.csv not found' in result.stderr
  assert 'Traceback' not in result.stderr
