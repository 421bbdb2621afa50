"""Hand-made run directories for the report tests: hparams.json + metrics.csv."""

import csv
import json
from pathlib import Path


def write_run(run_dir, hparams: dict, rows: list[dict]) -> Path:
  """A run directory as launchers/train.py leaves it (the files reports read)."""
  run = Path(run_dir)
  (run / 'results').mkdir(parents=True)
  (run / 'hparams.json').write_text(json.dumps(hparams))
  with open(run / 'results' / 'metrics.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return run
