"""One configuration of benchmarks/speed.py, in its own process (so that its
peak RSS is its own): `python benchmarks/speed_rounds.py CONFIG_JSON` prints
the measured row as one JSON line. The parent (speed.py) stays TF-free."""

from __future__ import annotations

import collections
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import models
from tff_feddst import runtime


def client_dataset(index: int, examples: int, batch_size: int = 32):
  """Client `index`'s seeded synthetic 28x28 images, batched."""
  rng = np.random.default_rng(index)
  y = rng.integers(0, 10, examples).astype(np.int32)
  x = rng.random((examples, 28, 28, 1), dtype=np.float32) * 0.5
  x[np.arange(examples), y * 2, :, 0] += 0.5  # learnable class signal
  return tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=y)).batch(batch_size)


def build_process(config, spec):
  """Stock TFF FedAvg, or ours at config['sparsity'], for `config`."""
  loss_fn = lambda: tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True)
  metrics_fn = lambda: [tf.keras.metrics.SparseCategoricalAccuracy()]
  client_opt = tff.learning.optimizers.build_sgdm(0.01, momentum=0.9)
  if config['algorithm'] == 'stock_fedavg':
    return tff.learning.algorithms.build_weighted_fed_avg(
        lambda: tff.learning.models.from_keras_model(
            models.mnist_cnn(), loss=loss_fn(), input_spec=spec,
            metrics=metrics_fn()),
        client_optimizer_fn=client_opt,
        loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)
  return algorithms.build_weighted_feddst(
      models.mnist_cnn, loss_fn=loss_fn, input_spec=spec, metrics_fn=metrics_fn,
      client_optimizer_fn=client_opt, sparsity=config['sparsity'],
      readjustment_ratio=0.05 if config['sparsity'] > 0 else 0.0,
      rounds_between_readjustments=2, readjustment_end_round=10_000,
      client_epochs=config['epochs'],
      client_weight_decay=config.get('weight_decay', 0.0), seed=0)


def _cpu_seconds(pid: int) -> float:
  """User + system CPU seconds of a process (the TFF worker)."""
  with open(f'/proc/{pid}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _cpu_now(worker_pids) -> float:
  """CPU seconds so far of the workers plus this process."""
  return sum(_cpu_seconds(p) for p in worker_pids) + time.process_time()


def run_child(config) -> dict:
  """One configuration: build, warm-up round, measured rounds.

  With config['workers'] = N > 1, N local workers split each round through
  TFF's mergeable execution context.
  """
  stock = config['algorithm'] == 'stock_fedavg'
  n_workers = config.get('workers', 1)
  if n_workers > 1:
    workers = [runtime.LocalWorker.start(
        max_concurrent_calls=config.get('worker_concurrency'))
               for _ in range(n_workers)]
    rt = runtime.Runtime([w.address for w in workers])
  else:
    workers = []
    rt = runtime.ensure_runtime(
        max_concurrent_calls=config.get('worker_concurrency'),
        intra_op_threads=config.get('worker_intra_op_threads'))
  worker_pids = [w.process.pid for w in (workers or rt.local_workers)]

  def sample(r):
    ids = np.random.default_rng([0, r]).choice(
        config['total_clients'], config['clients'], replace=False)
    data = [client_dataset(int(i), config['examples']) for i in ids]
    # Stock TFF trains one pass over what it is given; epochs via repeat.
    return [d.repeat(config['epochs']) for d in data] if stock else data

  start = time.perf_counter()
  process = build_process(config, client_dataset(0, 2).element_spec)
  build_s = time.perf_counter() - start
  state = process.initialize()
  times = {'readjust': [], 'plain': []}
  all_rounds = []
  cpu = []
  flops = dense_flops = 0.0
  first = None
  for r in range(config['rounds'] + 1):
    data = sample(r)
    t, c = time.perf_counter(), _cpu_now(worker_pids)
    out = process.next(state, data)
    elapsed = time.perf_counter() - t
    cpu.append(_cpu_now(worker_pids) - c)
    all_rounds.append(round(elapsed, 2))
    state = out.state
    if r == 0:
      first = elapsed
      continue
    stats = out.metrics['client_work'].get('round', {})
    kind = 'readjust' if stats.get('readjusted', False) else 'plain'
    times[kind].append(elapsed)
    flops = float(stats.get('client_flops', 0.0))
    dense_flops = float(stats.get('client_dense_flops', 0.0))
  rt.close()
  for w in workers:
    w.stop()
  all_times = times['plain'] + times['readjust']
  median = statistics.median(all_times)
  return dict(
      config,
      build_s=round(build_s, 2),
      first_round_s=round(first, 2),
      tracing_s=round(first - median, 2),
      median_round_s=round(median, 3),
      median_plain_s=(round(statistics.median(times['plain']), 3)
                      if times['plain'] else None),
      median_readjust_s=(round(statistics.median(times['readjust']), 3)
                         if times['readjust'] else None),
      python_peak_rss_mb=round(
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      worker_peak_rss_mb=round(
          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
      round_times_s=all_rounds,
      median_cpu_s=round(statistics.median(cpu[1:]), 3),
      client_gflops=round(flops / 1e9, 2),
      client_dense_gflops=round(dense_flops / 1e9, 2),
  )


def run_paired(config) -> dict:
  """All three processes in one child, each round on the same clients.

  The order of the three rotates every round, so machine noise (which is
  large here: +-20% between rounds) hits them alike; ratios are taken per
  round and their median reported.
  """
  worker_pids = [runtime.ensure_runtime(
      max_concurrent_calls=config.get('worker_concurrency'),
      intra_op_threads=config.get('worker_intra_op_threads'),
  ).local_workers[0].process.pid]
  spec = client_dataset(0, 2).element_spec
  runs = {}
  for name, s in config['paired']:
    process = build_process(dict(config, algorithm=name, sparsity=s), spec)
    runs[name] = dict(process=process, state=process.initialize(), times=[],
                      cpu=[], readjusted=[])
  for r in range(config['rounds'] + 1):
    ids = np.random.default_rng([0, r]).choice(
        config['total_clients'], config['clients'], replace=False)
    data = [client_dataset(int(i), config['examples']) for i in ids]
    order = list(runs)[r % 3:] + list(runs)[:r % 3]
    for name in order:
      run = runs[name]
      given = ([d.repeat(config['epochs']) for d in data]
               if name == 'stock_fedavg' else data)
      t, c = time.perf_counter(), _cpu_now(worker_pids)
      out = run['process'].next(run['state'], given)
      run['times'].append(time.perf_counter() - t)
      run['cpu'].append(_cpu_now(worker_pids) - c)
      run['state'] = out.state
      stats = out.metrics['client_work'].get('round', {})
      run['readjusted'].append(bool(stats.get('readjusted', False)))
  runtime.shutdown()
  stock = runs['stock_fedavg']['times'][1:]
  result = dict(config)
  for name, run in runs.items():
    times = run['times'][1:]
    flags_ = run['readjusted'][1:]
    result[name] = dict(
        first_round_s=round(run['times'][0], 2),
        median_round_s=round(statistics.median(times), 3),
        median_plain_s=round(statistics.median(
            [t for t, f in zip(times, flags_) if not f]), 3),
        median_readjust_s=(round(statistics.median(
            [t for t, f in zip(times, flags_) if f]), 3) if any(flags_)
                           else None),
        median_ratio_to_stock=round(statistics.median(
            [t / s for t, s in zip(times, stock)]), 3),
        median_cpu_s=round(statistics.median(run['cpu'][1:]), 3),
        median_cpu_ratio_to_stock=round(statistics.median(
            [t / s for t, s in zip(run['cpu'][1:],
                                   runs['stock_fedavg']['cpu'][1:])]), 3),
        round_times_s=[round(t, 2) for t in run['times']],
        round_cpu_s=[round(t, 2) for t in run['cpu']])
  return result


def main(argv) -> None:
  config = json.loads(argv[1])
  fn = run_paired if config.get('paired') else run_child
  print(json.dumps(fn(config)))


if __name__ == '__main__':
  main(sys.argv)
