"""--dataset=tfrecord refusals from the launcher.

The round trip (records written from train.py's bundled partition train to the
bundled reader's metrics, and export from them) shares its run with the run
lock's test in test_launchers_train.py.
"""

from launcher_helpers import TRAIN, run_script


def test_tfrecord_with_a_bad_data_dir_is_refused(tmp_path):
  # Without --data_dir: a flag validator (test_launchers_train.py).
  empty = tmp_path / 'empty'
  empty.mkdir()
  bad = run_script(TRAIN, '--dataset=tfrecord', f'--data_dir={empty}',
                   '--model=mlp', f'--root_dir={tmp_path / "b"}')
  assert bad.returncode != 0 and 'feature_spec.json' in bad.stderr
  assert 'Traceback' not in bad.stderr
