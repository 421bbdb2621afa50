"""What the study drivers (reproduce.py, dynamics.py) share: reading runs' CSVs
and writing a doc whose hand-written part below a marker survives regeneration."""

from __future__ import annotations

import csv
import os

from tff_feddst.program import metrics
from tff_feddst.program import paths

NOTES_MARKER = '<!-- Everything below this line is kept by --report. -->'
BYTES_PER_MB = metrics.BYTES_PER_MB


def read_rows(run_dir: str) -> list[dict]:
  """The rows of a run's results/metrics.csv ([] before its first round)."""
  path = paths.RunPaths.of(run_dir).metrics_csv
  if not path.exists():
    return []
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def value(row, key):
  """A float cell, None when empty or NaN."""
  text = row.get(key, '')
  return float(text) if text not in ('', None, 'nan') else None


def fmt(v) -> str:
  if v is None:
    return '—'
  return f'{v:.3f}' if isinstance(v, float) else str(v)


def write_doc(path: str, generated: str) -> str:
  """Writes `generated` + the marker + the notes kept from `path`, atomically."""
  notes = ''
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
    if NOTES_MARKER in text:
      notes = text.split(NOTES_MARKER, 1)[1]
  text = generated.rstrip('\n') + '\n\n' + NOTES_MARKER + notes
  paths.write_atomic(path, text)
  return text
