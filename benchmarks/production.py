"""The measurements of docs/production.md: TFRecord round trip, warm start, DP.

  uv run python benchmarks/production.py [--studies=tfrecord,warm_start,dp]
  uv run python benchmarks/production.py --report   # writes docs/production.md

--report writes the page's "Measurements" section and keeps the hand-written
text above and below it (`report_lib.write_doc`).

Resumable and frozen-clone friendly, like benchmarks/dynamics.py: every run
is a `launchers/train.py` run directory under --root_dir that resumes from its
checkpoints; a complete run is skipped (the launcher returns at once).

- tfrecord: the digits demo written as TFRecords (launchers/write_tfrecords.py)
  and trained from them, against the bundled reader with the same seed; the
  two metrics.csv files must agree row for row (timings aside).
- warm_start: the paper CNN trained centrally on a seeded 10% of
  Fashion-MNIST's training set, then FedDST at S=0.9 from it (`--init_from`)
  and from scratch, with the paper's client settings. The pretraining images
  are part of the federation's data too (a team pretrains on what it holds
  centrally); the point is the head start, not unseen data.
- dp: DP-FedAvg (fixed mask) against accuracy and ε: RandomMask S=0.8 and
  dense FedAvg at noise multipliers 0 / 0.5 / 1.0, 100 of 400 clients per
  round (DP needs many; ε at δ = 1/400), 100 rounds. One local epoch
  (DP-FedAvg's usual setting, and 100 clients × 10 epochs would cost ~5 h per
  run here); 100 rounds of ~13 s keep the six runs near 2 h on this VM. The
  fixed clip C is calibrated first: a noiseless run with adaptive clipping at
  the median (quantile 0.5) for 20 rounds; C = the median of its clip over
  rounds 11–20 (written to dp/clip_norm.json). Two runs without DP (no clip,
  no noise), sparse and dense, separate what the clip costs from what the
  sparse mask costs at these settings, and RandomMask clipped at 4·C without
  noise tells whether the clip's level is what binds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
from benchmarks import report_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from tff_feddst.program import paths  # pylint: disable=g-import-not-at-top,wrong-import-position

SHOWN_ROOT = 'runs/production'  # The docs' commands show the runs here.
_ROOT = flags.DEFINE_string('root_dir', SHOWN_ROOT,
                            'One directory per study below this.')
_STUDIES = flags.DEFINE_list('studies', ['tfrecord', 'warm_start', 'dp'],
                             'Which studies to run, in this order.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Fashion-MNIST files.')
_ROUNDS = flags.DEFINE_integer('rounds', 100, 'Rounds of each warm-start run.',
                               lower_bound=1)
_CENTRAL_FRACTION = flags.DEFINE_float(
    'central_fraction', 0.1, 'Share of the training set used centrally.',
    lower_bound=0.0, upper_bound=1.0)
_CENTRAL_EPOCHS = flags.DEFINE_integer('central_epochs', 5,
                                       'Epochs of central training.',
                                       lower_bound=1)
_TARGET = flags.DEFINE_float('target_accuracy', 0.7,
                             'Client accuracy whose first round is reported.')
_REPORT = flags.DEFINE_bool('report', False,
                            'Write docs/production.md from the runs.')
_DOCS = flags.DEFINE_string('docs_dir', os.path.join(_REPO, 'docs'),
                            'Where --report writes.')

STUDIES = ('tfrecord', 'warm_start', 'dp')
TFRECORD_RUN = ['--rounds=20', '--seed=0']
# --dataset=tfrecord takes the paper's run-size defaults; the demo's, given.
TFRECORD_DEMO_SIZE = ['--clients_per_round=5',
                      '--rounds_between_readjustments=3', '--eval_every=4']
PAPER = [*report_lib.PAPER_FLAGS, '--eval_every=5', '--algorithm=feddst',
         '--sparsity=0.9', '--readjustment_ratio=0.05',
         '--rounds_between_readjustments=10', '--seed=0']
UPLINK_MB = 100
DP_COMMON = ['--dataset=fashion_mnist', '--total_clients=400', '--beta=0.1',
             '--clients_per_round=100', '--client_epochs=1',
             '--batch_size=32', '--client_learning_rate=0.01',
             '--client_momentum=0.9', '--client_weight_decay=0.001',
             '--checkpoint_every=5', '--eval_every=5', '--seed=0']
DP_ALGORITHMS = {'random_mask': ['--algorithm=random_mask', '--sparsity=0.8'],
                 'fedavg': ['--algorithm=fedavg']}
DP_NOISE = (0.0, 0.5, 1.0)
DP_ROUNDS = 100
WIDE_CLIP = 4
CALIBRATION_ROUNDS = 20


def _dir(*parts: str) -> str:
  return os.path.join(_ROOT.value, *parts)


def _train(*args: str) -> list[str]:
  return [sys.executable, os.path.join(_REPO, 'launchers', 'train.py'), *args]


def tfrecord_commands() -> list[list[str]]:
  records = _dir('tfrecord', 'records')
  return [
      _train(*TFRECORD_RUN, f'--root_dir={_dir("tfrecord", "bundled")}'),
      _train(*TFRECORD_RUN, '--dataset=tfrecord', f'--data_dir={records}',
             *TFRECORD_DEMO_SIZE,
             f'--root_dir={_dir("tfrecord", "records_run")}'),
  ]


def warm_start_commands() -> dict[str, list[str]]:
  common = [*PAPER, f'--rounds={_ROUNDS.value}',
            f'--readjustment_end_round={_ROUNDS.value // 2}', *_data_args()]
  return {
      'scratch': _train(*common, f'--root_dir={_dir("warm_start", "scratch")}'),
      'warm': _train(*common, f'--init_from={_pretrained_path()}',
                     f'--root_dir={_dir("warm_start", "warm")}'),
  }


def _data_args() -> list[str]:
  return [f'--data_dir={_DATA_DIR.value}'] if _DATA_DIR.value else []


def calibration_command() -> list[str]:
  return _train(*DP_COMMON, *DP_ALGORITHMS['random_mask'],
                f'--rounds={CALIBRATION_ROUNDS}', '--dp_noise_multiplier=0',
                '--dp_adaptive_quantile=0.5', *_data_args(),
                f'--root_dir={_dir("dp", "calibrate")}')


def calibrated_clip() -> float | None:
  """C: the median adaptive clip of rounds 11–20 of the calibration run."""
  path = _dir('dp', 'clip_norm.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)['clip_norm']
  rows = report_lib.read_rows(_dir('dp', 'calibrate'))
  if len(rows) < CALIBRATION_ROUNDS:
    return None
  column = [k for k in rows[0] if k.endswith('dp_query_metrics/clip')]
  if len(column) != 1:
    raise ValueError(f'{_dir("dp", "calibrate")}: expected one '
                     f'.../dp_query_metrics/clip column, found {column}.')
  clips = sorted(report_lib.value(r, column[0])
                 for r in rows[CALIBRATION_ROUNDS // 2:CALIBRATION_ROUNDS])
  clip = float(clips[len(clips) // 2])
  paths.write_atomic(path, json.dumps(dict(clip_norm=clip, rounds=[
      CALIBRATION_ROUNDS // 2 + 1, CALIBRATION_ROUNDS]), indent=2))
  return clip


def _dp_study_run(name: str, algorithm: list[str], *dp_flags: str
                  ) -> list[str]:
  """One run of the DP study: its settings, run directory dp/name."""
  return _train(*DP_COMMON, *algorithm, f'--rounds={DP_ROUNDS}', *dp_flags,
                *_data_args(), f'--root_dir={_dir("dp", name)}')


def dp_commands(clip) -> dict[str, list[str]]:
  """The DP runs by name (`clip`: C, or a placeholder before calibration)."""
  # Noise level outermost: a sparse/dense pair at equal ε completes first.
  return {f'{name}_z{z:g}': _dp_study_run(
      f'{name}_z{z:g}', args, f'--dp_noise_multiplier={z:g}',
      f'--dp_clip_norm={clip}')
          for z in DP_NOISE for name, args in DP_ALGORITHMS.items()}


def wide_clip_commands(clip) -> dict[str, list[str]]:
  """RandomMask clipped at 4·C without noise: whether the clip level is what
  binds the sparse model."""
  wide = clip * WIDE_CLIP if isinstance(clip, float) else f'{WIDE_CLIP}*{clip}'
  name = f'random_mask_z0_clip{WIDE_CLIP}C'
  return {name: _dp_study_run(name, DP_ALGORITHMS['random_mask'],
                              '--dp_noise_multiplier=0',
                              f'--dp_clip_norm={wide}')}


def no_dp_commands() -> dict[str, list[str]]:
  """The same runs without DP: no clip, no noise (the reference)."""
  return {f'{name}_nodp': _dp_study_run(f'{name}_nodp', args)
          for name, args in DP_ALGORITHMS.items()}


def _pretrained_path() -> str:
  return _dir('warm_start', 'pretrained.keras')


def write_records() -> None:
  """The digits demo as TFRecords (written aside, then moved into place)."""
  records = _dir('tfrecord', 'records')
  if os.path.exists(os.path.join(records, 'feature_spec.json')):
    return
  partial = records + '.partial'
  shutil.rmtree(partial, ignore_errors=True)
  subprocess.run([sys.executable,
                  os.path.join(_REPO, 'launchers', 'write_tfrecords.py'),
                  f'--output_dir={partial}'], check=True)
  shutil.rmtree(records, ignore_errors=True)
  os.replace(partial, records)


def pretrain() -> None:
  """Trains the paper CNN centrally on a seeded share of the training set."""
  if os.path.exists(_pretrained_path()):
    return
  # pylint: disable=g-import-not-at-top
  import numpy as np
  from tff_feddst import tf_import
  tf = tf_import.import_tensorflow()
  from tff_feddst import data as data_lib
  from tff_feddst import models as models_lib
  # pylint: enable=g-import-not-at-top
  tf.keras.utils.set_random_seed(0)
  data = data_lib.load('fashion_mnist', _DATA_DIR.value)
  rng = np.random.default_rng(0)
  n = int(round(_CENTRAL_FRACTION.value * len(data.y_train)))
  pick = np.sort(rng.permutation(len(data.y_train))[:n])
  model = models_lib.get_model_fn('mnist_cnn', data.x_train.shape[1:],
                                  data.num_classes)()
  model.compile(
      optimizer=tf.keras.optimizers.SGD(0.01, momentum=0.9),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=['accuracy'])
  model.fit(data.x_train[pick], data.y_train[pick], batch_size=32,
            epochs=_CENTRAL_EPOCHS.value, verbose=2)
  _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
  partial = _pretrained_path() + '.partial.keras'
  model.save(partial)
  paths.write_atomic(_dir('warm_start', 'pretrained.json'), json.dumps(dict(
      examples=n, central_fraction=_CENTRAL_FRACTION.value,
      epochs=_CENTRAL_EPOCHS.value, test_accuracy=float(accuracy)), indent=2))
  os.replace(partial, _pretrained_path())


def _tfrecord_section() -> list[str]:
  bundled, own = (report_lib.read_rows(_dir('tfrecord', d))
                  for d in ('bundled', 'records_run'))
  if not bundled or not own:
    return ['Not run yet.']
  strip = lambda rows: [{k: v for k, v in r.items()
                         if not k.startswith('time/')} for r in rows]
  same = strip(bundled) == strip(own)
  keys = ['train/accuracy', 'test/accuracy', 'test/client_mean_accuracy']
  table = ['| reader | ' + ' | '.join(keys) + ' | uplink MB |',
           '|' + '---|' * (len(keys) + 2)]
  for name, rows in (('bundled', bundled), ('TFRecord', own)):
    last = [r for r in rows if r.get('test/accuracy')][-1]
    uplink = report_lib.value(last, 'round/cumulative_uplink_bytes')
    table.append(f'| {name} (round {last["round"]}) | ' + ' | '.join(
        report_lib.fmt(report_lib.value(last, k)) for k in keys) +
                 f' | {report_lib.fmt(uplink / report_lib.BYTES_PER_MB)} |')
  return [f'{len(own)} rounds each; every metrics.csv row (timings aside) '
          f'identical: **{"yes" if same else "NO"}**.', '', *table]


def _warm_start_rows() -> list[dict]:
  out = []
  for name in ('scratch', 'warm'):
    rows = report_lib.read_rows(_dir('warm_start', name))
    if not rows:
      continue
    evals = report_lib.evaluations(rows)
    acc = lambda r: report_lib.value(r, report_lib.ACCURACY)
    reached = [int(r['round']) for r in evals if acc(r) >= _TARGET.value]
    out.append({
        'start': name, 'rounds': int(rows[-1]['round']),
        'first eval': acc(evals[0]) if evals else None,
        f'round reaching {_TARGET.value}': reached[0] if reached else None,
        f'acc@{UPLINK_MB}MB': report_lib.best_within_mb(rows, UPLINK_MB),
        'mean last third': report_lib.tail_mean(
            rows, _ROUNDS.value * 2 // 3 + 1, _ROUNDS.value),
        'uplink_MB': report_lib.uplink_mb(rows)})
  return out


def _warm_start_section() -> list[str]:
  rows = _warm_start_rows()
  if not rows:
    return ['Not run yet.']
  info_path = _dir('warm_start', 'pretrained.json')
  lines = []
  if os.path.exists(info_path):
    with open(info_path) as f:
      info = json.load(f)
    lines += [f'Central model: {info["examples"]} training images '
              f'({info["central_fraction"]:.0%}), {info["epochs"]} epochs, '
              f'test accuracy {info["test_accuracy"]:.3f}.', '']
  return lines + report_lib.markdown_table(list(rows[0]), rows)


def _dp_section() -> list[str]:
  clip = calibrated_clip()
  runs = [(name, report_lib.read_rows(_dir('dp', name)))
          for name in [*dp_commands(clip), *wide_clip_commands(clip),
                       *no_dp_commands()]]
  runs = [(name, rows) for name, rows in runs if rows]
  if clip is None or not runs:
    return ['Not run yet.']
  lines = [f'Fixed clip C = {clip:.4g} (median adaptive clip, calibration run '
           f'rounds {CALIBRATION_ROUNDS // 2 + 1}–{CALIBRATION_ROUNDS}).', '',
           '| run | rounds | ε | δ | mean client acc, last third | '
           'best client acc | uplink MB |', '|---|---|---|---|---|---|---|']
  without_dp = no_dp_commands()
  for name, rows in runs:
    best = [report_lib.value(r, report_lib.ACCURACY)
            for r in report_lib.evaluations(rows)]
    private = name not in without_dp
    cells = [rows[-1]['round'],
             report_lib.value(rows[-1], 'privacy/epsilon') if private
             else 'no DP',
             report_lib.value(rows[-1], 'privacy/delta') if private else None,
             report_lib.tail_mean(rows, DP_ROUNDS * 2 // 3 + 1, DP_ROUNDS),
             max(best) if best else None, report_lib.uplink_mb(rows)]
    lines.append(f'| {name} | ' + ' | '.join(report_lib.fmt(c) for c in cells)
                 + ' |')
  return lines


def _commands() -> str:
  def text(args):
    return report_lib.shown_command(args, _REPO, {_ROOT.value: SHOWN_ROOT})
  return '\n'.join([
      text([sys.executable, os.path.join(_REPO, 'launchers',
                                         'write_tfrecords.py'),
            f'--output_dir={_dir("tfrecord", "records")}']),
      *(text(c) for c in tfrecord_commands()),
      '# warm_start: pretrained.keras from benchmarks/production.py itself',
      *(text(c) for c in warm_start_commands().values()),
      '# dp: C from the calibration run (dp/clip_norm.json)',
      text(calibration_command()),
      *(text(c) for c in dp_commands(calibrated_clip() or '<C>').values()),
      *(text(c) for c in wide_clip_commands(
          calibrated_clip() or '<C>').values()),
      '# dp: the same runs without DP (no clip, no noise)',
      *(text(c) for c in no_dp_commands().values())])


def report() -> None:
  text = '\n'.join([
      '## Measurements', '',
      'Generated by `uv run python benchmarks/production.py --report` from the '
      'runs of the commands at the end of this section.', '',
      '### TFRecord round trip', '',
      'The digits demo (20 clients, Dirichlet β=0.1, seed 0; one client has '
      'no examples and is dropped in both) written by '
      '`launchers/write_tfrecords.py` and trained with `--dataset=tfrecord`, '
      'against the bundled reader; FedDST defaults, 20 rounds.', '',
      *_tfrecord_section(), '',
      '### Warm start', '',
      'Fashion-MNIST, 400 clients, Dirichlet β=0.1, 20 clients per round, 10 '
      'local epochs, FedDST S=0.9 (α=0.05, R_adj=10, R_end=rounds/2), seed 0; '
      'from a centrally trained model (`--init_from`: initial mask = '
      'magnitude pruning of its weights) and from scratch. Accuracies are '
      'mean client-local test accuracy; `acc@100MB`: best evaluation within '
      '100 MB of uplink; `mean last third`: mean over the evaluations of the '
      'last third of rounds.', '', *_warm_start_section(), '',
      '### Differential privacy', '',
      'DP-FedAvg on a fixed mask. Fashion-MNIST, 400 clients, Dirichlet '
      'β=0.1, 100 clients per round, 1 local epoch, SGD lr 0.01 momentum '
      f'0.9, L2 1e-3, {DP_ROUNDS} rounds, seed 0; RandomMask at S=0.8 and '
      'dense FedAvg at noise multipliers 0 / 0.5 / 1.0 with one fixed '
      'clip; ε from `dp_accounting` (RDP, Poisson-sampled Gaussian at rate '
      '100/400) at δ = 1/400. Training metrics are released without '
      'privacy.', '',
      *_dp_section(), '',
      '### Commands', '', '```', _commands(), '```'])
  print(report_lib.write_doc(os.path.join(_DOCS.value, 'production.md'), text))


def main(argv):
  del argv
  report_lib.refuse_unknown('studies', STUDIES, _STUDIES.value)
  if _REPORT.value:
    report()
    return
  os.makedirs(_ROOT.value, exist_ok=True)
  for study in _STUDIES.value:
    if study == 'tfrecord':
      write_records()
      commands = tfrecord_commands()
    elif study == 'warm_start':
      os.makedirs(_dir('warm_start'), exist_ok=True)
      pretrain()
      commands = list(warm_start_commands().values())
    else:
      os.makedirs(_dir('dp'), exist_ok=True)
      report_lib.run_commands([calibration_command()])
      commands = [*dp_commands(calibrated_clip()).values(),
                  *wide_clip_commands(calibrated_clip()).values(),
                  *no_dp_commands().values()]
    report_lib.run_commands(commands)


if __name__ == '__main__':
  app.run(main)
