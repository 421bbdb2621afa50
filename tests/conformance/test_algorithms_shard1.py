"""Conformance: registered algorithms × variants on users' own inputs
(shard 1 of 3, so that two test processes share the cases)."""

import pytest

import checks
import conformance_lib as lib

SHARD = 1


@pytest.mark.parametrize(
    'algorithm, variant, eco', lib.shard(lib.default_cases(), SHARD),
    ids=lib.case_id)
def test_conforms(algorithm, variant, eco, monkeypatch, tmp_path):
  checks.run_and_check(lib.build(algorithm, variant, eco, monkeypatch),
                       tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    'algorithm, variant, eco', lib.shard(lib.full_cases(), SHARD),
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
