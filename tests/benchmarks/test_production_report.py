"""benchmarks/production.py --report against hand-made runs: the TFRecord
row-for-row check, the warm-start table (first round at the target, best
accuracy within 100 MB, last-third mean), the kept introduction and notes.
(A child process: the script's absl flags would clash with the in-process
launchers.)"""

import json
from pathlib import Path
import subprocess
import sys

import fake_runs

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / 'benchmarks' / 'production.py'
MARKER = '<!-- Everything below this line is kept by --report. -->'
INTRO = '<!-- Everything above this line is kept by --report. -->'


def rows(accuracy_at, rounds, mb_per_round=2.0, timing=0.0):
  return [{'round': r, 'time/round_seconds': timing + r,
           'round/cumulative_uplink_bytes': r * mb_per_round * 1e6,
           'train/accuracy': 0.5,
           'test/accuracy': accuracy_at(r) if r % 5 == 0 else '',
           'test/client_mean_accuracy': accuracy_at(r) if r % 5 == 0 else ''}
          for r in range(1, rounds + 1)]


def report(root, docs):
  proc = subprocess.run(
      [sys.executable, str(PRODUCTION), '--report', f'--root_dir={root}',
       f'--docs_dir={docs}', '--rounds=60', '--target_accuracy=0.7'],
      capture_output=True, text=True, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return (docs / 'production.md').read_text()


def test_report_tables_and_kept_notes(tmp_path):
  root, docs = tmp_path / 'runs', tmp_path / 'docs'
  same = rows(lambda r: r / 100, 20)
  fake_runs.write_run(root / 'tfrecord' / 'bundled', {}, same)
  fake_runs.write_run(root / 'tfrecord' / 'records_run', {},
                      rows(lambda r: r / 100, 20, timing=9.0))
  fake_runs.write_run(root / 'warm_start' / 'scratch', {},
                      rows(lambda r: 0.4 + r / 200, 60))  # 0.7 at round 60.
  fake_runs.write_run(root / 'warm_start' / 'warm', {},
                      rows(lambda r: 0.65 + r / 1000, 60))  # 0.7 at 50.
  (root / 'warm_start' / 'pretrained.json').write_text(json.dumps(dict(
      examples=6000, central_fraction=0.1, epochs=5, test_accuracy=0.81)))
  docs.mkdir()
  (docs / 'production.md').write_text(
      f'# Use\nkeep me too\n{INTRO}\nold\n{MARKER}\n\n## Notes\nkeep me\n')
  text = report(root, docs)
  assert text.startswith(f'# Use\nkeep me too\n{INTRO}\n\n## Measurements\n')
  assert 'old' not in text and str(root) not in text
  assert '--root_dir=runs/production/tfrecord/bundled' in text
  assert 'identical: **yes**' in text  # Timings differ, nothing else.
  assert 'test accuracy 0.810' in text
  # scratch: first eval 0.425, target at 60, within 100 MB (≤ round 50)
  # best 0.650, last third (rounds 45..60 evaluated: 45, 50, 55, 60) mean.
  scratch = sum(0.4 + r / 200 for r in (45, 50, 55, 60)) / 4
  assert f'| scratch | 60 | 0.425 | 60 | 0.650 | {scratch:.3f} | 120.000 |' in text
  warm = sum(0.65 + r / 1000 for r in (45, 50, 55, 60)) / 4
  assert f'| warm | 60 | 0.655 | 50 | 0.700 | {warm:.3f} | 120.000 |' in text
  assert text.endswith('## Notes\nkeep me\n')
  assert '### Differential privacy\n\nDP-FedAvg' in text
  assert 'Not run yet.' in text.split('### Differential privacy')[1]
  # DP: C is the median clip of calibration rounds 11-20 (values 11..20 -> 16).
  calibration = rows(lambda r: 0.3, 20)
  for r in calibration:
    r['aggregator/dp/dp_query_metrics/clip'] = float(r['round'])
  fake_runs.write_run(root / 'dp' / 'calibrate', {}, calibration)
  # 100 rounds; the last third is rounds 67-100 (evaluated 70, 75, ..., 100).
  private = rows(lambda r: 0.5 + (0.1 if r > 66 else 0.0), 100)
  for r in private:
    r['privacy/epsilon'], r['privacy/delta'] = r['round'] / 100, 0.0025
  fake_runs.write_run(root / 'dp' / 'fedavg_z0.5', {}, private)
  # The reference without DP: no privacy columns, no clip.
  fake_runs.write_run(root / 'dp' / 'random_mask_nodp', {},
                      rows(lambda r: 0.7 if r > 66 else 0.2, 100, 0.5))
  text = report(root, docs)
  assert 'Fixed clip C = 16 ' in text
  assert '| fedavg_z0.5 | 100 | 1.000 | 0.003 | 0.600 | 0.600 | 200.000 |' in text
  assert '| random_mask_nodp | 100 | no DP | — | 0.700 | 0.700 | 50.000 |' in text
  nodp_command = text.split('without DP (no clip, no noise)\n')[1]
  assert '--algorithm=random_mask' in nodp_command.split('\n')[0]
  assert '--dp_' not in nodp_command.split('```')[0]
  assert '--dp_clip_norm=16.0' in text
  assert '--dp_noise_multiplier=0 --dp_clip_norm=64.0' in text  # 4·C.
  assert json.loads((root / 'dp' / 'clip_norm.json').read_text())[
      'clip_norm'] == 16.0
  # A differing metric is reported as such.
  other = rows(lambda r: r / 100, 20)
  other[3]['train/accuracy'] = 0.6
  (root / 'tfrecord' / 'records_run' / 'results' / 'metrics.csv').unlink()
  (root / 'tfrecord' / 'records_run' / 'results').rmdir()
  fake_runs.write_run(root / 'tfrecord' / 'records_run', {}, other)
  assert 'identical: **NO**' in report(root, docs)


def test_unknown_study_is_refused(tmp_path):
  proc = subprocess.run(
      [sys.executable, str(PRODUCTION), '--studies=nope',
       f'--root_dir={tmp_path}'], capture_output=True, text=True, cwd=REPO)
  assert proc.returncode != 0 and '--studies' in proc.stderr
  assert 'Traceback' not in proc.stderr
