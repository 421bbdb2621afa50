"""Every test session runs TFF on a worker owned by `tff_feddst.runtime`."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # pylint: disable=g-import-not-at-top

from tff_feddst import runtime  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope='session', autouse=True)
def tff_runtime():
  rt = runtime.ensure_runtime()
  yield rt
  runtime.shutdown()
