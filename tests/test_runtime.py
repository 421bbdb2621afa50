"""No TFF worker outlives its Python process, however that process ends."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_feddst import runtime

CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import tensorflow_federated as tff
    from tff_feddst import runtime
    rt = runtime.ensure_runtime()

    @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
    def total(x):
      return tff.federated_sum(x)

    assert total([1.0, 2.0]) == 3.0
    print(rt.local_workers[0].process.pid, flush=True)
    mode = sys.argv[1]
    if mode == 'os_exit':
      os._exit(3)
    if mode == 'wait':
      time.sleep(600)
""")


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      state = f.read().rsplit(')', 1)[1].split()[0]
  except FileNotFoundError:
    return False
  return state != 'Z'


def _wait_gone(pid: int, timeout: float = 15.0) -> bool:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if not _alive(pid):
      return True
    time.sleep(0.1)
  return False


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')


# A process ends in one of two ways for its worker: through Python's exit
# (clean, or an uncaught exception: the atexit hook) or without it (os._exit,
# SIGTERM's default action, SIGKILL: PR_SET_PDEATHSIG). One case of each here
# and in test_worker_dies_when_parent_is_killed; the uncaught exception is
# test_script_without_ensure_runtime_leaves_no_worker's, SIGTERM to a
# launcher is test_launchers_train.py's signal test.
@pytest.mark.parametrize('mode, code', [('clean', 0), ('os_exit', 3)])
def test_worker_ends_with_its_process(mode, code):
  # Reading the child's stdout through a pipe must not hang on the worker.
  proc = subprocess.run([sys.executable, '-c', CHILD, mode],
                        capture_output=True, text=True, timeout=120,
                        env=_env())
  assert proc.returncode == code, proc.stderr[-2000:]
  worker_pid = int(proc.stdout.split()[0])
  assert _wait_gone(worker_pid)


@pytest.mark.parametrize('sig', [signal.SIGKILL])
def test_worker_dies_when_parent_is_killed(sig):
  proc = subprocess.Popen([sys.executable, '-c', CHILD, 'wait'],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True, env=_env())
  try:
    worker_pid = int(proc.stdout.readline())
    assert _alive(worker_pid)
    proc.send_signal(sig)
    proc.communicate(timeout=60)  # EOF: nobody else holds the pipe
    assert _wait_gone(worker_pid)
  finally:
    proc.kill()


# A script as a tff.learning user writes it: no `runtime.ensure_runtime()`.
# It writes the pids of its worker_binary children, then dies on an exception
# (atexit hooks run) or on SIGKILL (nothing runs).
NO_ENSURE_CHILD = textwrap.dedent("""
    import os, signal, sys
    import tensorflow as tf
    import tensorflow_federated as tff
    from tff_feddst import algorithms, data, models

    fed = data.build_federated_data(data.load_digits(), num_clients=4, seed=0)
    clients = [data.preprocess(fed.train.create_tf_dataset_for_client(c),
                               batch_size=32) for c in fed.client_ids[:2]]
    process = algorithms.build_weighted_fed_avg(
        models.get_model_fn('mlp', (8, 8, 1), 10),
        loss_fn=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=clients[0].element_spec,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1))
    process.next(process.initialize(), clients)

    def children():
      for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
          stat = open(f'/proc/{pid}/stat').read()
          cmdline = open(f'/proc/{pid}/cmdline', 'rb').read()
        except OSError:
          continue
        if (int(stat.rsplit(')', 1)[1].split()[1]) == os.getpid() and
            b'worker_binary' in cmdline):
          yield pid

    workers = ' '.join(children())
    open(sys.argv[1], 'w').write(workers)
    print('workers', workers, flush=True)
    if sys.argv[2] == 'sigkill':
      os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError('boom')
""")


@pytest.mark.parametrize('ending', ['exception', 'sigkill'])
def test_script_without_ensure_runtime_leaves_no_worker(tmp_path, ending):
  pid_file = tmp_path / 'workers'
  proc = subprocess.Popen([sys.executable, '-c', NO_ENSURE_CHILD, pid_file,
                           ending],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=_env())
  try:
    # EOF on the pipe: no worker holds the script's stdout after it died.
    out, err = proc.communicate(timeout=180)
  except subprocess.TimeoutExpired:
    workers = pid_file.read_text().split() if pid_file.exists() else []
    for pid in workers:  # The leaked workers this test's child started.
      os.kill(int(pid), signal.SIGKILL)
    proc.kill()
    proc.communicate()  # Returns now that nobody else holds the pipes.
    pytest.fail(f'the pipe stayed open after the script ended (workers '
                f'{workers} outlived it)')
  if ending == 'exception':
    assert proc.returncode == 1 and 'RuntimeError: boom' in err, err[-3000:]
  else:
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
  workers = [int(pid) for pid in pid_file.read_text().split()]
  assert workers, out  # The script did run on a worker.
  for pid in workers:
    assert _wait_gone(pid), f'worker_binary {pid} outlived its script'


def test_pytest_session_leaves_no_worker(tmp_path):
  test_file = tmp_path / 'test_inner.py'
  pid_file = tmp_path / 'pid'
  test_file.write_text(textwrap.dedent(f"""
      import numpy as np
      import tensorflow_federated as tff
      from tff_feddst import runtime

      def test_sum():
        @tff.tensorflow.computation(np.float32)
        def double(x):
          return x * 2
        assert double(2.0) == 4.0
        pid = runtime.ensure_runtime().local_workers[0].process.pid
        open({str(pid_file)!r}, 'w').write(str(pid))
  """))
  conftest = os.path.join(os.path.dirname(__file__), 'conftest.py')
  (tmp_path / 'conftest.py').write_text(open(conftest).read())
  proc = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-s', '-p', 'no:cacheprovider',
       str(test_file)], capture_output=True, text=True, timeout=180,
      env=_env(), cwd=tmp_path)
  assert proc.returncode == 0, proc.stdout[-2000:]
  assert _wait_gone(int(pid_file.read_text()))


def _cpu_seconds(pid: int) -> float:
  """User + system CPU seconds a process has used so far."""
  with open(f'/proc/{pid}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def test_several_workers_split_clients():
  """Two local workers behind the mergeable context both run client work
  (each one's CPU time grows by a share of it) and give the same sum."""
  workers = [runtime.LocalWorker.start(max_concurrent_calls=1)
             for _ in range(2)]
  try:
    with runtime.Runtime([w.address for w in workers]) as rt:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top

      @tff.tensorflow.computation(np.float32)
      def busy(x):
        """x, after ~0.1 CPU-s of matrix products."""
        a = tf.random.stateless_normal([200, 200], seed=[0, 0]) / 14.0
        _, m = tf.while_loop(lambda i, m: i < 400,
                             lambda i, m: (i + 1, tf.tanh(m @ a)), (0, a))
        return x + 0.0 * tf.reduce_sum(m)

      @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
      def total(x):
        return tff.federated_sum(tff.federated_map(busy, x))

      pids = [w.process.pid for w in workers]
      before = [_cpu_seconds(p) for p in pids]
      assert total([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == 21.0
      used = [_cpu_seconds(p) - b for p, b in zip(pids, before)]
      # Six clients in two chunks: each worker ran about half of the work;
      # a worker that ran none would show only its RPC bookkeeping.
      assert min(used) > 0.3 * max(used) and max(used) > 0.2, used
      rt.check_workers()
      workers[1].stop()
      with pytest.raises(runtime.WorkerUnavailableError,
                         match=workers[1].address):
        rt.check_workers()
  finally:
    for w in workers:
      w.stop()
    runtime.ensure_runtime()  # Give the session its default context back.


def test_unreachable_worker_is_named():
  with pytest.raises(runtime.WorkerUnavailableError, match='127.0.0.1:9'):
    runtime.Runtime(['127.0.0.1:9'], connect_timeout=1)


def test_capped_worker_runs_computations():
  """The concurrency cap reaches the worker's command line and still sums."""
  with runtime.Runtime(max_concurrent_calls=1) as rt:
    pid = rt.local_workers[0].process.pid
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      assert b'--max_concurrent_computation_calls=1' in f.read()

    @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
    def total(x):
      return tff.federated_sum(x)
    assert total([1.0, 2.0, 3.0]) == 6.0
  assert _wait_gone(pid)
  runtime.ensure_runtime()  # Give the session its default context back.


def _wait_for_exec(worker, timeout=30.0):
  """Waits until the start wrapper has exec'd the worker binary (/proc's
  cmdline and environ are briefly empty during the exec)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if os.readlink(f'/proc/{worker.process.pid}/exe') == (
        runtime.worker_binary_path()):
      return
    time.sleep(0.05)
  raise AssertionError('the worker binary was never exec\'d')


def _cmdline(worker):
  _wait_for_exec(worker)
  with open(f'/proc/{worker.process.pid}/cmdline', 'rb') as f:
    return f.read().split(b'\0')


@pytest.mark.parametrize('cap, expected', [
    (None, f'--max_concurrent_computation_calls={len(os.sched_getaffinity(0))}'),
    (3, '--max_concurrent_computation_calls=3'),
    (0, None),
])
def test_default_cap_is_one_call_per_cpu(cap, expected):
  worker = runtime.LocalWorker.start(max_concurrent_calls=cap)
  try:
    caps = [a for a in _cmdline(worker)
            if a.startswith(b'--max_concurrent_computation_calls')]
    assert caps == ([expected.encode()] if expected else [])
  finally:
    worker.stop()


def test_bad_concurrency_cap_is_named():
  with pytest.raises(ValueError, match='max_concurrent_calls'):
    runtime.LocalWorker.start(max_concurrent_calls=-1)


@pytest.mark.parametrize('threads', [None, 1])
def test_intra_op_threads_reach_the_worker(threads):
  worker = runtime.LocalWorker.start(intra_op_threads=threads)
  try:
    _wait_for_exec(worker)
    with open(f'/proc/{worker.process.pid}/environ', 'rb') as f:
      environ = f.read().split(b'\0')
    setting = [e for e in environ if e.startswith(b'TF_NUM_INTRAOP_THREADS=')]
    inherited = os.environ.get('TF_NUM_INTRAOP_THREADS')
    if threads is None:
      assert setting == ([f'TF_NUM_INTRAOP_THREADS={inherited}'.encode()]
                         if inherited is not None else [])
    else:
      assert setting == [b'TF_NUM_INTRAOP_THREADS=1']
  finally:
    worker.stop()
  with pytest.raises(ValueError, match='intra_op_threads'):
    runtime.LocalWorker.start(intra_op_threads=0)


def test_worker_is_started_without_forking_this_process(monkeypatch):
  """`Popen(preexec_fn=...)` forks a process that holds gRPC threads; their
  fork handlers can deadlock the child before exec (a CI run hung so). The
  death-with-parent request runs in a fresh interpreter instead, which then
  becomes the worker (the tests above prove it still dies with us)."""
  calls = []
  real_popen = subprocess.Popen

  def recording_popen(args, **kwargs):
    calls.append(kwargs)
    return real_popen(args, **kwargs)

  monkeypatch.setattr(runtime.subprocess, 'Popen', recording_popen)
  worker = runtime.LocalWorker.start()
  try:
    assert calls and all(c.get('preexec_fn') is None for c in calls)
    _wait_for_exec(worker)  # The wrapper became the worker.
  finally:
    worker.stop()
