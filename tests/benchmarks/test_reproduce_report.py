"""benchmarks/reproduce.py --report against hand-made runs: budgets, rounds,
verdicts, and notes kept across regeneration."""

import csv
import importlib.util
import json
from pathlib import Path

from absl import flags
from absl.testing import flagsaver
import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    'reproduce', REPO / 'benchmarks' / 'reproduce.py')
reproduce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduce)

COLUMNS = ['round', 'round/cumulative_uplink_bytes',
           'round/cumulative_downlink_bytes', 'round/client_flops',
           'time/elapsed_seconds', 'test/client_mean_accuracy', 'test/accuracy']


def write_run(root, algorithm, mb_per_round, accuracy_at, eval_every):
  """150 rounds; evaluations every `eval_every` with accuracy_at(round)."""
  run = Path(root) / 'seed0' / algorithm
  (run / 'results').mkdir(parents=True)
  (run / 'hparams.json').write_text(json.dumps(dict(algorithm=algorithm)))
  with open(run / 'results' / 'metrics.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, COLUMNS)
    writer.writeheader()
    for r in range(1, 151):
      evaluated = r % eval_every == 0 or r == 150
      acc = accuracy_at(r) if evaluated else ''
      writer.writerow({
          'round': r, 'round/cumulative_uplink_bytes': r * mb_per_round * 1e6,
          'round/cumulative_downlink_bytes': r * mb_per_round * 1e6,
          'round/client_flops': 1e9, 'time/elapsed_seconds': 10.0 * r,
          'test/client_mean_accuracy': acc, 'test/accuracy': acc})


@pytest.fixture
def runs(tmp_path):
  root = tmp_path / 'runs'
  # FedDST: 4 MB/round, accuracy r/200. FedAvg: 20 MB/round, (r/200) - 0.05.
  write_run(root, 'feddst', 4.0, lambda r: r / 200, 10)
  write_run(root, 'fedavg', 20.0, lambda r: r / 200 - 0.05, 4)
  write_run(root, 'random_mask', 4.0, lambda r: r / 200 + 0.002, 10)
  with flagsaver.flagsaver(root_dir=str(root),
                           algorithms=['feddst', 'fedavg', 'random_mask'],
                           docs_dir=str(tmp_path / 'docs')):
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    yield tmp_path / 'docs'


def test_summary_reads_budgets_and_rounds(runs):
  feddst = reproduce.summarize('feddst')
  fedavg = reproduce.summarize('fedavg')
  # 100 MB: FedDST's last evaluation within is round 20 (80 MB); FedAvg's
  # round 4 (80 MB).
  assert feddst['acc@100MB'] == pytest.approx(20 / 200)
  assert fedavg['acc@100MB'] == pytest.approx(4 / 200 - 0.05)
  assert fedavg['acc@400MB'] == pytest.approx(20 / 200 - 0.05)
  # r50: the last evaluation at or before round 50 (FedAvg: round 48).
  assert feddst['acc@r50'] == pytest.approx(50 / 200)
  assert fedavg['acc@r50'] == pytest.approx(48 / 200 - 0.05)
  # Mean over evaluations from round 101: FedDST rounds 110..150.
  assert feddst['acc_mean_r101+'] == pytest.approx(
      sum(range(110, 151, 10)) / 5 / 200)
  assert feddst['uplink_MB'] == pytest.approx(600.0)
  assert feddst['client_TFLOPs'] == pytest.approx(0.15)


def test_verdicts_name_better_and_level(runs):
  lines = reproduce.verdicts(
      [reproduce.summarize(a) for a in ('feddst', 'fedavg', 'random_mask')])
  fedavg, random_mask = lines
  assert 'FedDST vs fedavg' in fedavg
  assert 'at equal upload (100/200/400 MB) **better**' in fedavg
  assert 'at equal rounds (r50/r100/r150/mean r101+) **better**' in fedavg
  assert 'at equal rounds (r50/r100/r150/mean r101+) level' in random_mask


def test_report_keeps_notes_below_the_marker(runs):
  docs = runs
  docs.mkdir()
  (docs / 'results.md').write_text(
      f'old generated text\n{reproduce.NOTES_MARKER}\n\n## Findings\nkeep me\n')
  reproduce.report()
  text = (docs / 'results.md').read_text()
  assert 'old generated text' not in text
  assert text.count(reproduce.NOTES_MARKER) == 1
  assert text.endswith('\n\n## Findings\nkeep me\n')
  assert '**better**' in text
  assert (docs / 'accuracy_vs_uplink.png').stat().st_size > 0
  summary = json.loads((docs / 'results_summary.json').read_text())
  assert [s['algorithm'] for s in summary] == ['feddst', 'fedavg',
                                               'random_mask']
