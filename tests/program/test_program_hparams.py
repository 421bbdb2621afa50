"""hparams.json is written once, atomically, and guards resumption."""

import json

import pytest

from tff_feddst.program import hparams as hparams_lib
from tff_feddst.program import paths

HP = {'algorithm': 'feddst', 'sparsity': 0.8, 'beta': 0.1, 'rounds': 10,
      'eval_every': 2, 'workers': [], 'partition': None}


def test_written_once_and_identical_restart_accepted(tmp_path):
  recorded = hparams_lib.write_or_check_hparams(tmp_path, HP)
  with open(tmp_path / 'hparams.json', encoding='utf-8') as f:
    assert json.load(f) == HP == recorded
  assert not [p for p in tmp_path.iterdir() if p.name != 'hparams.json']
  mtime = (tmp_path / 'hparams.json').stat().st_mtime_ns
  # Result-neutral keys may change; the file keeps the first values.
  again = hparams_lib.write_or_check_hparams(
      tmp_path, dict(HP, rounds=20, eval_every=5, workers=['h:1']))
  assert again == HP
  assert (tmp_path / 'hparams.json').stat().st_mtime_ns == mtime


def test_mismatch_lists_every_differing_key(tmp_path):
  hparams_lib.write_or_check_hparams(tmp_path, HP)
  new = dict(HP, sparsity=0.5, beta=0.3, rounds=99, seed=1)
  del new['algorithm']
  with pytest.raises(hparams_lib.HparamsMismatchError) as e:
    hparams_lib.write_or_check_hparams(tmp_path, new)
  message = str(e.value)
  assert 'sparsity: 0.8 (recorded) != 0.5 (this run)' in message
  assert 'beta: 0.1 (recorded) != 0.3 (this run)' in message
  assert "algorithm: 'feddst' (recorded) != '<absent>' (this run)" in message
  assert "seed: '<absent>' (recorded) != 1 (this run)" in message
  assert 'rounds' not in message
  assert hparams_lib.differing_keys(HP, new).keys() == {
      'algorithm', 'beta', 'seed', 'sparsity'}
  assert hparams_lib.read_hparams(tmp_path) == HP  # Untouched.


def test_tuples_compare_equal_to_their_json_lists(tmp_path):
  hparams_lib.write_or_check_hparams(tmp_path, {'shape': (1, 2)})
  hparams_lib.check_hparams(tmp_path, {'shape': [1, 2]})


def test_write_atomic_replaces_whole_file(tmp_path):
  target = tmp_path / 'sub' / 'f.txt'
  paths.write_atomic(target, 'old')
  paths.write_atomic(target, b'new')
  assert target.read_bytes() == b'new'
  assert [p.name for p in target.parent.iterdir()] == ['f.txt']


def test_a_key_added_later_as_none_is_no_difference(tmp_path):
  hparams_lib.write_or_check_hparams(tmp_path, {'a': 1})
  hparams_lib.check_hparams(tmp_path, {'a': 1, 'init_from': None})
  with pytest.raises(hparams_lib.HparamsMismatchError, match='init_from'):
    hparams_lib.check_hparams(tmp_path, {'a': 1, 'init_from': 'model.keras'})
