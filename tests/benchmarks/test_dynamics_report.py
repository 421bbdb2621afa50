"""benchmarks/dynamics.py --report against hand-made runs: the tail mean, the
paired differences to RandomMask and FedAvg with their standard error, the
two-seed verdict, turnover, Jaccard, kept notes. (A child
process: the script's absl flags would clash with the in-process launchers.)"""

from pathlib import Path
import subprocess
import sys

import fake_runs

REPO = Path(__file__).resolve().parents[2]
DYNAMICS = REPO / 'benchmarks' / 'dynamics.py'
MARKER = '<!-- Everything below this line is kept by --report. -->'


def write_run(root, variant, accuracy_at, turnover, setting='s95_seed0'):
  rows = []
  for r in range(1, 151):
    readjusted = int(r % 10 == 2 and r < 76)
    acc = accuracy_at(r) if r % 5 == 0 else ''
    rows.append({
        'round': r, 'round/cumulative_uplink_bytes': r * 1.0e6,
        'round/readjusted': readjusted,
        'finalizer/mask_turnover': turnover * r / 150,
        'finalizer/client_mask_jaccard': 0.5 if readjusted else 1.0,
        'test/client_mean_accuracy': acc, 'test/accuracy': acc})
  fake_runs.write_run(Path(root) / setting / variant,
                      dict(algorithm=variant), rows)


def test_report_tables_and_kept_notes(tmp_path):
  root, docs = tmp_path / 'runs', tmp_path / 'docs'
  write_run(root, 'random_mask', lambda r: 0.5, 0.0)
  write_run(root, 'consensus', lambda r: 0.5 + (0.1 if r > 100 else 0), 0.3)
  write_run(root, 'feddst', lambda r: 0.55, 0.01)
  # Seed 1: consensus is +0.00 and +0.06 in turns over rounds 105..150
  # (mean 0.03, sample sd sqrt(10 * 0.03**2 / 9), SE sd / sqrt(10) = 0.010);
  # feddst +0.01, below the 2-point margin; FedAvg 0.52 throughout.
  write_run(root, 'random_mask', lambda r: 0.5, 0.0, 's95_seed1')
  write_run(root, 'consensus',
            lambda r: 0.5 + (0.0 if r % 10 == 5 else 0.06), 0.3, 's95_seed1')
  write_run(root, 'feddst', lambda r: 0.51, 0.01, 's95_seed1')
  write_run(root, 'fedavg', lambda r: 0.52, 0.0, 's95_seed1')
  docs.mkdir()
  (docs / 'dynamics.md').write_text(f'old\n{MARKER}\n\n## Findings\nkeep me\n')
  proc = subprocess.run(
      [sys.executable, str(DYNAMICS), '--report', f'--root_dir={root}',
       f'--docs_dir={docs}', '--settings=s95_seed0,s95_seed1',
       '--variants=random_mask,consensus,feddst,fedavg'],
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  text = (docs / 'dynamics.md').read_text()
  assert text.count(MARKER) == 1 and text.endswith('## Findings\nkeep me\n')
  rows = {}
  for line in text.splitlines():  # The first table's rows.
    name = line.split(' | ')[0].strip('| ')
    if name in ('consensus', 'random_mask') and name not in rows:
      rows[name] = line.split(' | ')
  # variant | rounds | acc@50 | acc@100 | acc@200 | tail | turnover | J | MB
  assert rows['consensus'][5] == '0.600'    # mean of rounds 105..150
  assert rows['consensus'][6] == '0.300'    # final turnover
  assert rows['consensus'][7] == '0.500'    # Jaccard on readjusting rounds
  assert rows['consensus'][2] == '0.500'    # best within 50 MB (round 50)
  # Seed 0: minus RandomMask, paired; no FedAvg run on that seed.
  assert '| consensus | +0.100 ± 0.000 | — |' in text
  assert '| consensus | +0.030 ± 0.010 | +0.010 ± 0.010 |' in text  # Seed 1.
  verdict = text.split('## S=0.95: every seed', 1)[1]
  assert ('| consensus | +0.100 ± 0.000 | +0.030 ± 0.010 | — | +0.010 ± 0.010 '
          '| **yes** |') in verdict
  assert ('| feddst | +0.050 ± 0.000 | +0.010 ± 0.000 | — | -0.010 ± 0.000 '
          '| no |') in verdict
  assert (docs / 'dynamics' / 's95_seed0' / 'accuracy_vs_uplink.png').exists()
  assert '--root_dir=runs/dynamics/s95_seed1/feddst ' in text
  assert str(root) not in text
