"""--dataset=tfrecord end to end: the digits demo written as TFRecords trains
to the same metrics as from the bundled reader (same seed)."""

import csv

from launcher_helpers import REPO, TRAIN, run_script
from tff_feddst import data, program

RUN = ['--rounds=2', '--eval_every=2', '--client_epochs=1', '--seed=0']


def rows(run_dir):
  with open(program.RunPaths.of(run_dir).metrics_csv, newline='') as f:
    return [{k: v for k, v in r.items() if not k.startswith('time/')}
            for r in csv.DictReader(f)]


def test_tfrecord_round_trip_trains_like_the_bundled_reader(tmp_path):
  # The launcher's digits demo partition (20 clients, Dirichlet 0.1, seed 0).
  federated = data.build_federated_data(data.load_digits(), num_clients=20,
                                        beta=0.1, seed=0)
  data.write_tfrecord(federated, tmp_path / 'records')
  bundled = run_script(TRAIN, *RUN, f'--root_dir={tmp_path / "bundled"}')
  assert bundled.returncode == 0, bundled.stderr[-3000:]
  # The demo's run-size defaults, given explicitly (tfrecord gets the paper's).
  own = run_script(TRAIN, *RUN, '--dataset=tfrecord',
                   f'--data_dir={tmp_path / "records"}', '--clients_per_round=5',
                   '--rounds_between_readjustments=3',
                   f'--root_dir={tmp_path / "own"}')
  assert own.returncode == 0, own.stderr[-3000:]
  assert rows(tmp_path / 'own') == rows(tmp_path / 'bundled')
  assert program.read_hparams(tmp_path / 'own')['model'] == 'digits_cnn'
  # The run exports, checked on the records' central test images.
  export = run_script(REPO / 'launchers' / 'export.py',
                      f'--root_dir={tmp_path / "own"}', '--noint8',
                      '--num_samples=16')
  assert export.returncode == 0, export.stderr[-3000:]
  assert 'checked on 16 test images' in export.stdout


def test_tfrecord_with_a_bad_data_dir_is_refused(tmp_path):
  # Without --data_dir: a flag validator (test_launchers_train.py).
  empty = tmp_path / 'empty'
  empty.mkdir()
  bad = run_script(TRAIN, '--dataset=tfrecord', f'--data_dir={empty}',
                   '--model=mlp', f'--root_dir={tmp_path / "b"}')
  assert bad.returncode != 0 and 'feature_spec.json' in bad.stderr
  assert 'Traceback' not in bad.stderr
