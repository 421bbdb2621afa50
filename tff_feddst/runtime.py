"""The TFF execution context, owned by this library.

TFF 0.87's default context starts TFF's C++ `worker_binary` on first use and
leaves it running after Python exits, with the parent's stdout still open: a
pipe reading the program (CI included) then never ends. This module starts the
worker itself, so that it can guarantee the worker's end:

* the child asks the kernel for `SIGKILL` when its parent dies
  (`prctl(PR_SET_PDEATHSIG)`), which covers `SIGKILL`/`SIGTERM` of Python and
  `os._exit`;
* an `atexit` hook terminates and reaps it on a normal exit or an uncaught
  exception;
* its stdout/stderr go to a log file or `/dev/null`, never to ours.

The library's process builders call `own_default_context()`, so a script
that never calls `ensure_runtime()` runs on such a worker too, instead of the
one TFF's import-time default context would start. Only that import-time
default is replaced: a context the user set (a `tff.program.
NativeFederatedContext`, a remote context, TFF's test context, ...), before or
after importing this library, is left in place.

The same `Runtime` connects to already-running remote workers given as
`host:port` addresses; with several workers a round's clients are split across
them through TFF's mergeable execution context.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence

from absl import logging
import grpc
import tensorflow_federated as tff
# pylint: disable=g-direct-tensorflow-import,line-too-long
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context
# pylint: enable=g-direct-tensorflow-import,line-too-long

_PR_SET_PDEATHSIG = 1
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_OPTIONS = [
    ('grpc.max_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_receive_message_length', _GRPC_MAX_MESSAGE_BYTES),
    ('grpc.max_send_message_length', _GRPC_MAX_MESSAGE_BYTES),
]


class WorkerUnavailableError(RuntimeError):
  """A TFF worker did not answer (never started, or died mid-run)."""


def worker_binary_path() -> str:
  """Path of the C++ executor service that ships inside the TFF wheel."""
  path = os.path.join(os.path.dirname(tff.__file__), 'data', 'worker_binary')
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'TFF worker binary not found at {path}; reinstall '
        'tensorflow-federated==0.87.0 (uv sync).')
  return path


# Run as `python -I -S -c _DIE_WITH_PARENT PARENT_PID BINARY ARGS...`: asks
# the kernel for SIGKILL when the parent dies (kept across execve), then
# becomes the worker. A separate interpreter, not `Popen(preexec_fn=...)`:
# that forks this process, whose gRPC threads' fork handlers then restart
# threads in the child, which can deadlock before exec (seen: a CI run hung
# on a worker start, the child stuck on a futex, the parent on its pipe).
_DIE_WITH_PARENT = (
    'import ctypes, os, signal, sys\n'
    f'ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, '
    'signal.SIGKILL, 0, 0, 0)\n'
    'if os.getppid() != int(sys.argv[1]):\n'
    '  os._exit(1)  # The parent died before prctl took effect.\n'
    'os.execv(sys.argv[2], sys.argv[2:])\n')


def _dying_with_parent(args: Sequence[str]) -> list[str]:
  """`args` run so that the process is SIGKILLed when this one dies."""
  return [sys.executable, '-I', '-S', '-c', _DIE_WITH_PARENT,
          str(os.getpid()), *args]


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


@dataclasses.dataclass
class LocalWorker:
  """A `worker_binary` process started by, and dying with, this process."""

  process: subprocess.Popen
  address: str

  @classmethod
  def start(cls, *, max_message_mb: int = 2000,
            log_path: str | None = None,
            max_concurrent_calls: int | None = None,
            intra_op_threads: int | None = None) -> 'LocalWorker':
    """`max_concurrent_calls` caps how many client computations of one
    `federated_map` the worker runs at once. None: one per CPU this process
    may use; 0: no cap (TFF's default). Without a cap the worker starts all
    clients of a round at once, and on 2 cores the paper CNN's stock FedAvg
    round took 1.38x longer (7.9 s vs 5.7 s median, single rounds 5.7-12.5 s;
    `benchmarks/speed.py --mode=compare --worker_concurrency=0` vs `=2`).
    `intra_op_threads` sizes the thread pool each op of the worker may use
    (TF's `TF_NUM_INTRAOP_THREADS`); None: TF's default, one per CPU."""
    if threading.current_thread() is not threading.main_thread():
      # PDEATHSIG fires when the *thread* that forked exits.
      logging.warning('Starting a TFF worker from a non-main thread: it will be '
                      'killed when that thread ends.')
    port = _free_port()
    args = [worker_binary_path(), f'--port={port}',
            f'--grpc_max_message_length_megabytes={max_message_mb}']
    if max_concurrent_calls is None:
      max_concurrent_calls = len(os.sched_getaffinity(0))
    if max_concurrent_calls < 0:
      raise ValueError('max_concurrent_calls must be >= 0 (0: no cap) or None '
                       f'(one per CPU), got {max_concurrent_calls!r}.')
    if max_concurrent_calls:
      args.append(f'--max_concurrent_computation_calls={max_concurrent_calls}')
    env = None
    if intra_op_threads is not None:
      if intra_op_threads < 1:
        raise ValueError('intra_op_threads must be >= 1 or None (TF default), '
                         f'got {intra_op_threads!r}.')
      env = dict(os.environ, TF_NUM_INTRAOP_THREADS=str(intra_op_threads))
    with contextlib.ExitStack() as stack:
      out = (stack.enter_context(open(log_path, 'ab')) if log_path
             else subprocess.DEVNULL)
      process = subprocess.Popen(
          _dying_with_parent(args), stdin=subprocess.DEVNULL, stdout=out,
          stderr=out, env=env, close_fds=True)
    logging.info('Started TFF worker pid %d on port %d', process.pid, port)
    return cls(process=process, address=f'127.0.0.1:{port}')

  def stop(self, timeout: float = 10.0) -> None:
    if self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(timeout)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()


def _connect(address: str, timeout: float) -> tff.framework.RemoteExecutorGrpcStub:
  channel = grpc.insecure_channel(address, _GRPC_OPTIONS)
  try:
    grpc.channel_ready_future(channel).result(timeout=timeout)
  except grpc.FutureTimeoutError as e:
    raise WorkerUnavailableError(
        f'TFF worker at {address} did not answer within {timeout:.0f} s. Start '
        f'it with `{worker_binary_path()} --port=PORT` on that machine.') from e
  return tff.framework.RemoteExecutorGrpcStub(channel)


def _executor_factory(stub, address: str) -> tff.framework.ExecutorFactory:
  def stack_fn(cardinalities):
    if not stub.is_ready:
      raise WorkerUnavailableError(f'TFF worker at {address} is not reachable '
                                   '(it died or was stopped).')
    cardinalities.setdefault(tff.CLIENTS, 0)  # As TFF's local factory does.
    executor = tff.framework.RemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor
  return tff.framework.ResourceManagingExecutorFactory(stack_fn)


def _context_kwargs():
  return dict(compiler_fn=tff.backends.native.desugar_and_transform_to_native,
              transform_args=tff.tensorflow.transform_args,
              transform_result=tff.tensorflow.transform_result)


class Runtime:
  """Owns TFF's default execution context and the workers behind it.

  `Runtime()` starts one local worker. `Runtime(workers=['h1:p', 'h2:p'])`
  connects to running workers and splits each round's clients across them.
  Use as a context manager, or call `close()`; an atexit hook closes it too.
  """

  def __init__(self, workers: Sequence[str] = (), *,
               max_message_mb: int = 2000, log_dir: str | None = None,
               connect_timeout: float = 60.0,
               max_concurrent_calls: int | None = None,
               intra_op_threads: int | None = None):
    self.local_workers: list[LocalWorker] = []
    self._closed = False
    if not workers:
      log_path = os.path.join(log_dir, 'tff_worker.log') if log_dir else None
      self.local_workers.append(
          LocalWorker.start(max_message_mb=max_message_mb, log_path=log_path,
                            max_concurrent_calls=max_concurrent_calls,
                            intra_op_threads=intra_op_threads))
      workers = [w.address for w in self.local_workers]
    self.addresses = list(workers)
    atexit.register(self.close)
    try:
      stubs = [_connect(a, connect_timeout) for a in self.addresses]
      factories = [_executor_factory(s, a) for s, a in zip(stubs, self.addresses)]
      self._factories = factories
      if len(factories) == 1:
        self.context = tff.framework.SyncExecutionContext(
            factories[0], **_context_kwargs())
      else:
        self.context = tff.framework.MergeableCompExecutionContext(
            [tff.framework.AsyncExecutionContext(f, **_context_kwargs())
             for f in factories],
            compiler_fn=tff.backends.native.compile_to_mergeable_comp_form)
    except BaseException:
      self.close()
      raise
    tff.framework.set_default_context(self.context)

  def program_context(self) -> tff.program.NativeFederatedContext:
    """A `tff.program.FederatedContext` on this runtime's worker, for TFF's
    program logic (`tff.learning.programs.train_model`). Install it with
    `tff.framework.set_default_context`; the library then leaves it in place
    (`own_default_context`), and this runtime still owns the worker."""
    if len(self._factories) != 1:
      raise ValueError(
          'program_context() runs on one worker; this runtime has '
          f'{len(self._factories)} ({self.addresses}). TFF 0.87 has no '
          'asynchronous context that splits clients across workers.')
    return tff.program.NativeFederatedContext(
        tff.framework.AsyncExecutionContext(self._factories[0],
                                            **_context_kwargs()))

  def check_workers(self) -> None:
    """Raises `WorkerUnavailableError` naming the first dead worker."""
    for address in self.addresses:
      local = [w for w in self.local_workers if w.address == address]
      if local and local[0].process.poll() is not None:
        raise WorkerUnavailableError(
            f'TFF worker at {address} exited with code '
            f'{local[0].process.returncode}.')
      channel = grpc.insecure_channel(address)
      try:
        grpc.channel_ready_future(channel).result(timeout=5)
      except grpc.FutureTimeoutError as e:
        raise WorkerUnavailableError(
            f'TFF worker at {address} is not reachable.') from e
      finally:
        channel.close()

  def close(self) -> None:
    if self._closed:
      return
    self._closed = True
    with contextlib.suppress(Exception):
      if tff.framework.get_context_stack().current is getattr(
          self, 'context', None):
        tff.test.set_no_default_context()
    for worker in self.local_workers:
      worker.stop()
    atexit.unregister(self.close)

  def __enter__(self) -> 'Runtime':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


_DEFAULT: Runtime | None = None


def _drop_tff_default_context() -> None:
  """At exit, lets TFF's import-time default context go while modules live.

  Otherwise a process that imported TFF but never ran a computation prints
  'Exception ignored in ServiceManager.__del__' at interpreter teardown.
  """
  with contextlib.suppress(Exception):
    tff.test.set_no_default_context()
    gc.collect()


atexit.register(_drop_tff_default_context)


def ensure_runtime(workers: Sequence[str] = (), **kwargs) -> Runtime:
  """The process-wide runtime, started on first call (library entry points)."""
  global _DEFAULT
  if _DEFAULT is None or _DEFAULT._closed:  # pylint: disable=protected-access
    _DEFAULT = Runtime(workers, **kwargs)
  elif list(workers) and list(workers) != _DEFAULT.addresses:
    _DEFAULT.close()
    _DEFAULT = Runtime(workers, **kwargs)
  else:  # Another Runtime may have taken over the default context meanwhile.
    tff.framework.set_default_context(_DEFAULT.context)
  return _DEFAULT


def is_tff_import_default(context) -> bool:
  """Whether `context` is the kind TFF installs when it is imported.

  `import tensorflow_federated` runs `tff.backends.native.
  set_sync_local_cpp_execution_context()` with its defaults: a
  `SyncExecutionContext` over `local_cpp_executor_factory` (native compiler,
  no default clients, no struct streaming). TFF's test contexts use the same
  factory with another compiler, so the compiler is checked too.
  """
  if type(context) is not tff.framework.SyncExecutionContext:  # pylint: disable=unidiomatic-typecheck
    return False
  stack_fn = getattr(getattr(context, '_executor_factory', None),
                     '_executor_stack_fn', None)
  if (getattr(stack_fn, '__module__', None) != _TFF_EXECUTOR_FACTORY or
      getattr(stack_fn, '__qualname__', None) !=
      'local_cpp_executor_factory.<locals>.stack_fn'):
    return False
  cells = local_cpp_cells(context)
  pipeline = getattr(getattr(context, '_async_context', None),
                     '_compiler_pipeline', None)
  return (cells.get('default_num_clients') == 0 and
          cells.get('stream_structs') is False and
          getattr(pipeline, '_compiler_fn', None) is
          tff.backends.native.desugar_and_transform_to_native)


def local_cpp_cells(context) -> dict:
  """The closure of a TFF local C++ context's executor-stack function
  (`default_num_clients`, `stream_structs`, its `service_manager`)."""
  stack_fn = context._executor_factory._executor_stack_fn  # pylint: disable=protected-access
  return dict(zip(stack_fn.__code__.co_freevars,
                  (c.cell_contents for c in stack_fn.__closure__ or ())))


_TFF_EXECUTOR_FACTORY = ('tensorflow_federated.python.core.impl.'
                         'executor_stacks.executor_factory')


def _tff_import_context():
  """A weak reference to TFF's import-time context, if it is still the
  default when this module is imported; else to nothing (the user replaced
  it). Identified by what it is, not by being current: a context the user
  set before importing this library is not taken for TFF's. A weak
  reference, as holding it would keep it alive into interpreter teardown
  (see `_drop_tff_default_context`)."""
  current = tff.framework.get_context_stack().current
  if is_tff_import_default(current):
    return weakref.ref(current)
  return lambda: None


_TFF_IMPORT_CONTEXT = _tff_import_context()


def own_default_context() -> Runtime | None:
  """Starts the process-wide runtime unless the user chose a context.

  Called by the library whenever it builds a process, so that running it
  never starts TFF's import-time worker, which a script ending on an exception
  leaves running (holding the script's stdout). The runtime is started when
  the current context is TFF's import-time one or none (TFF's runtime-error
  context: after `shutdown()` or `tff.test.set_no_default_context()`). Any
  other context (a `Runtime`'s, a `tff.program.NativeFederatedContext`, TFF's
  test context, a remote one) is the user's choice and is left in place.

  Returns:
    The runtime now running the library's computations, or None when the
    user's own context does.
  """
  current = tff.framework.get_context_stack().current
  if (current is _TFF_IMPORT_CONTEXT() or
      isinstance(current, runtime_error_context.RuntimeErrorContext)):
    return ensure_runtime()
  if _DEFAULT is not None and current is _DEFAULT.context:
    return _DEFAULT
  return None


def shutdown() -> None:
  """Closes the process-wide runtime, if any."""
  global _DEFAULT
  if _DEFAULT is not None:
    _DEFAULT.close()
    _DEFAULT = None
