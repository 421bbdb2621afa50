"""The user's TFF execution context is theirs: the library replaces only
TFF's own import-time default, whatever the import order."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import runtime

import conformance_lib as lib


def _build_fedavg():
  data = lib.client_datasets('tuple', lib.MODELS['sequential'])
  process = algorithms.build_weighted_fed_avg(
      lib.MODELS['sequential'].build, loss_fn=lib.loss_fn,
      input_spec=data[0].element_spec,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.05))
  return process, data


def _current():
  return tff.framework.get_context_stack().current


def _stop_tff_worker(context):
  """Stops the worker_binary a TFF local C++ context started (it would
  outlive the test process otherwise)."""
  cells = runtime.local_cpp_cells(context)
  process = cells['service_manager']._process  # pylint: disable=protected-access
  if process is not None and process.poll() is None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
  cells['service_manager']._process = None  # pylint: disable=protected-access
  return process


@pytest.fixture
def restore_runtime():
  yield
  runtime.ensure_runtime()  # The session's runtime, for the next tests.


def test_tffs_import_time_context_is_identified_by_what_it_is():
  assert runtime.is_tff_import_default(
      tff.backends.native.create_sync_local_cpp_execution_context())
  assert not runtime.is_tff_import_default(
      tff.backends.native.create_sync_local_cpp_execution_context(
          default_num_clients=2))
  assert not runtime.is_tff_import_default(
      tff.backends.test.create_sync_test_cpp_execution_context())
  assert not runtime.is_tff_import_default(
      tff.backends.native.create_async_local_cpp_execution_context())
  assert not runtime.is_tff_import_default(runtime.ensure_runtime().context)


def test_tffs_test_context_set_after_import_is_kept(restore_runtime):
  del restore_runtime
  context = tff.backends.test.create_sync_test_cpp_execution_context()
  tff.framework.set_default_context(context)
  try:
    process, data = _build_fedavg()
    assert _current() is context
    state = process.initialize()
    process.next(state, data)
    assert _current() is context
  finally:
    worker = _stop_tff_worker(context)
  assert worker is not None  # The rounds ran on the user's context.


def test_native_federated_context_is_kept(restore_runtime):
  del restore_runtime
  context = runtime.ensure_runtime().program_context()
  assert isinstance(context, tff.program.NativeFederatedContext)
  tff.framework.set_default_context(context)
  _build_fedavg()
  assert _current() is context


def test_a_context_built_like_tffs_default_but_set_by_the_user_is_kept(
    restore_runtime):
  del restore_runtime
  context = tff.backends.native.create_sync_local_cpp_execution_context()
  tff.framework.set_default_context(context)
  _build_fedavg()  # Not run: it would start TFF's unowned worker.
  assert _current() is context


def test_no_context_gets_the_librarys_runtime(restore_runtime):
  del restore_runtime
  tff.test.set_no_default_context()
  _build_fedavg()
  owned = runtime.own_default_context()
  assert owned is not None and _current() is owned.context


_BEFORE_IMPORT = textwrap.dedent('''
    import os, signal, sys
    import tensorflow_federated as tff
    import_default = tff.framework.get_context_stack().current
    mode = sys.argv[1]
    if mode == 'user_context':
      context = tff.backends.test.create_sync_test_cpp_execution_context()
      tff.framework.set_default_context(context)
    sys.path.insert(0, sys.argv[2])
    import conformance_lib as lib
    from tff_feddst import algorithms, runtime
    data = lib.client_datasets('tuple', lib.MODELS['sequential'])
    process = algorithms.build_weighted_fed_avg(
        lib.MODELS['sequential'].build, loss_fn=lib.loss_fn,
        input_spec=data[0].element_spec,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.05))
    current = tff.framework.get_context_stack().current
    process.next(process.initialize(), data)
    if mode == 'user_context':
      kept = current is context
      cells = runtime.local_cpp_cells(context)
      worker = cells['service_manager']._process
      ran = worker is not None
      if ran:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
      print('RESULT', kept, ran, flush=True)
    else:
      print('RESULT', current is runtime.own_default_context().context,
            current is not import_default, flush=True)
''')


@pytest.mark.parametrize('mode', ['user_context', 'tff_default'])
def test_context_set_before_importing_the_library(mode):
  """In a fresh interpreter: a context set before `import tff_feddst` is
  kept and runs the rounds; TFF's untouched default is replaced by ours."""
  out = subprocess.run(
      [sys.executable, '-c', _BEFORE_IMPORT, mode, os.path.dirname(__file__)],
      capture_output=True, text=True, timeout=300, check=False,
      stdin=subprocess.DEVNULL,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  lines = [l for l in out.stdout.splitlines() if l.startswith('RESULT')]
  assert lines == ['RESULT True True'], out.stderr[-3000:]


def test_a_process_trains_identically_under_a_program_context(
    restore_runtime):
  """The same rounds under `Runtime.program_context()` (materialized) and
  under the runtime's own context give the same weights."""
  del restore_runtime
  process, data = _build_fedavg()
  state = process.initialize()
  expected = process.get_model_weights(process.next(state, data).state)
  tff.framework.set_default_context(runtime.ensure_runtime().program_context())
  import asyncio  # pylint: disable=g-import-not-at-top

  async def one_round():
    initial = await tff.program.materialize_value(process.initialize())
    out = await tff.program.materialize_value(process.next(initial, data))
    return await tff.program.materialize_value(
        process.get_model_weights(out.state))

  got = asyncio.run(one_round())
  for a, b in zip(tf.nest.flatten(expected), tf.nest.flatten(got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
