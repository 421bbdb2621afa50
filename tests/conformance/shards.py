"""The conformance tests of one shard: the cases are split over several
files so that pytest-xdist's two processes (`--dist loadfile`) share them."""

import pytest

import checks
import conformance_lib as lib

COUNT = 3


def make_tests(index: int):
  """(test_conforms, test_conforms_on_every_setup) of shard `index`."""

  @pytest.mark.parametrize('algorithm, variant, eco',
                           lib.shard(lib.default_cases(), index, COUNT),
                           ids=lib.case_id)
  def test_conforms(algorithm, variant, eco, monkeypatch, tmp_path):
    checks.run_and_check(lib.build(algorithm, variant, eco, monkeypatch),
                         tmp_path)

  @pytest.mark.slow
  @pytest.mark.parametrize('algorithm, variant, eco',
                           lib.shard(lib.full_cases(), index, COUNT),
                           ids=lib.case_id)
  def test_conforms_on_every_setup(algorithm, variant, eco, monkeypatch,
                                   tmp_path):
    refused = lib.refusal(algorithm, eco)
    if refused:  # At build time, naming what it takes.
      with pytest.raises(ValueError, match=refused):
        lib.build(algorithm, variant, eco, monkeypatch)
      return
    checks.run_and_check(lib.build(algorithm, variant, eco, monkeypatch),
                         tmp_path)

  return test_conforms, test_conforms_on_every_setup
