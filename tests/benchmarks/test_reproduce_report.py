"""benchmarks/reproduce.py --report against hand-made runs: budgets, rounds,
verdicts, and notes kept across regeneration. (Run as a child process: the
script defines absl flags that would clash with the in-process launchers.)"""

import json
from pathlib import Path
import subprocess
import sys

import pytest

import fake_runs

REPO = Path(__file__).resolve().parents[2]
REPRODUCE = REPO / 'benchmarks' / 'reproduce.py'
MARKER = '<!-- Everything below this line is kept by --report. -->'


def write_run(root, algorithm, mb_per_round, accuracy_at, eval_every,
              seed=0):
  """150 rounds; evaluations every `eval_every` with accuracy_at(round)."""
  rows = []
  for r in range(1, 151):
    evaluated = r % eval_every == 0 or r == 150
    acc = accuracy_at(r) if evaluated else ''
    rows.append({
        'round': r, 'round/cumulative_uplink_bytes': r * mb_per_round * 1e6,
        'round/cumulative_downlink_bytes': r * mb_per_round * 1e6,
        'round/client_flops': 1e9, 'time/elapsed_seconds': 10.0 * r,
        'test/client_mean_accuracy': acc, 'test/accuracy': acc})
  fake_runs.write_run(Path(root) / f'seed{seed}' / algorithm,
                      dict(algorithm=algorithm), rows)


def report(root, docs, *flags):
  proc = subprocess.run(
      [sys.executable, str(REPRODUCE), '--report', f'--root_dir={root}',
       f'--docs_dir={docs}', '--algorithms=feddst,fedavg,random_mask',
       *flags],
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope='module')
def docs(tmp_path_factory):
  root = tmp_path_factory.mktemp('runs')
  # FedDST: 4 MB/round, accuracy r/200. FedAvg: 20 MB/round, r/200 - 0.05.
  write_run(root, 'feddst', 4.0, lambda r: r / 200, 10)
  write_run(root, 'fedavg', 20.0, lambda r: r / 200 - 0.05, 4)
  write_run(root, 'random_mask', 4.0, lambda r: r / 200 + 0.002, 10)
  docs = tmp_path_factory.mktemp('docs')
  (docs / 'results.md').write_text(
      f'old generated text\n{MARKER}\n\n## Findings\nkeep me\n')
  report(root, docs)
  return root, docs


def test_summary_reads_budgets_and_rounds(docs):
  _, docs_dir = docs
  summary = {s['algorithm']: s for s in json.loads(
      (docs_dir / 'reproduce' / 'seed0' / 'results_summary.json').read_text())}
  feddst, fedavg = summary['feddst'], summary['fedavg']
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


def test_verdicts_name_better_and_level(docs):
  text = (docs[1] / 'results.md').read_text()
  fedavg = next(l for l in text.splitlines() if 'FedDST vs fedavg' in l)
  random_mask = next(l for l in text.splitlines()
                     if 'FedDST vs random_mask' in l)
  assert 'at equal upload (100/200/400 MB) **better**' in fedavg
  assert 'at equal rounds (r50/r100/r150/mean r101+) **better**' in fedavg
  assert 'at equal rounds (r50/r100/r150/mean r101+) level' in random_mask


def test_report_keeps_notes_below_the_marker(docs):
  root, docs_dir = docs
  for _ in range(2):  # Regenerating twice changes nothing.
    text = (docs_dir / 'results.md').read_text()
    assert 'old generated text' not in text
    assert text.count(MARKER) == 1
    assert text.endswith('\n\n## Findings\nkeep me\n')
    report(root, docs_dir)
    assert (docs_dir / 'results.md').read_text() == text
  assert (docs_dir / 'reproduce' / 'seed0' /
          'accuracy_vs_uplink.png').stat().st_size > 0


def test_page_links_its_plots_and_shows_neutral_run_paths(docs):
  root, docs_dir = docs
  text = (docs_dir / 'results.md').read_text()
  assert '](reproduce/seed0/accuracy_vs_uplink.png)' in text
  assert '--root_dir=runs/reproduce/seed0/feddst ' in text
  assert str(root) not in text


def test_another_seed_on_a_page_of_its_own(tmp_path):
  root, docs = tmp_path / 'runs', tmp_path / 'docs'
  write_run(root, 'feddst', 4.0, lambda r: r / 200, 10, seed=1)
  report(root, docs, '--seed=1', '--algorithms=feddst',
         '--page=reproduce/seed1/results.md')
  seed1 = docs / 'reproduce' / 'seed1'
  assert sorted(p.name for p in seed1.iterdir()) == [
      'accuracy_vs_rounds.png', 'accuracy_vs_uplink.png', 'results.md',
      'results_summary.json']
  text = (seed1 / 'results.md').read_text()
  assert '](./accuracy_vs_uplink.png)' in text and '--seed=1' in text
