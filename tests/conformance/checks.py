"""What every algorithm promises, checked from outside the process.

* Every weight is finite, masks are binary and a masked weight is exactly
  0, after every round.
* Per-layer densities are the algorithm's (`density_promise`).
* The bytes a round counts are the bytes of the payloads that travel,
  serialized (numpy `nbytes` of every tensor of the client work's results).
* State saved by TFF's own `FileProgramStateManager` and loaded again gives
  the same next round, exactly.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst.algorithms import registry
from tff_feddst.sparsity import densities as densities_lib
from tff_feddst.sparsity import schedules

import conformance_lib as lib


def kernels_and_masks(built: lib.Built, state, weights=None):
  if weights is None:
    weights = built.process.get_model_weights(state)
  kernels, masks, _ = built.layout.split(
      [np.asarray(w) for w in weights.trainable],
      [np.asarray(w) for w in weights.non_trainable])
  return kernels, masks


def check_masked_weights(built: lib.Built, state, where: str):
  weights = built.process.get_model_weights(state)
  for w in list(weights.trainable) + list(weights.non_trainable):
    assert np.all(np.isfinite(w)), f'{where}: a weight is not finite'
  kernels, masks = kernels_and_masks(built, state, weights)
  for name, k, m in zip(built.layout.kernel_names, kernels, masks):
    assert set(np.unique(m)) <= {0.0, 1.0}, f'{where}: {name} mask not binary'
    assert np.all(k[m == 0] == 0), f'{where}: {name} has masked weights != 0'
  return [int(m.sum()) for m in masks]


def _family(algorithm: str) -> str:
  return registry.ALGORITHMS[algorithm].builder.split(':')[0].rsplit('.')[-1]


def check_density_promise(built: lib.Built, live: list[int], round_num: int,
                          previous: list[int] | None):
  """The global mask's live counts after `round_num` rounds (0: initial;
  `previous`: the counts a round before)."""
  hp, layout = built.hparams, built.layout
  family = _family(hp['algorithm'])
  sizes = list(layout.kernel_sizes)
  where = f'{hp["algorithm"]} after round {round_num}: live {live}'
  if family == 'sparsyfed':
    # Round 1 starts dense; then the union of the clients' global top-k.
    keep = sum(layout.live_counts)
    if round_num == 0:
      assert live == sizes, where
    else:
      assert keep <= sum(live) <= min(sum(sizes), lib.NUM_CLIENTS * keep), where
  elif family == 'prunefl':
    # PruneFL sizes the model itself: every layer keeps at least its
    # protected core, (1 - δ) of its live weights; beyond the core, the
    # total stays within the density cap 1 - S.
    assert all(0 < n <= m for n, m in zip(live, sizes)), where
    if previous is not None and live != previous:  # It reconfigured.
      core = [math.floor((1 - hp['prunefl_max_decrease']) * n)
              for n in previous]
      assert all(n >= c for n, c in zip(live, core)), f'{where}, core {core}'
      cap = (1.0 - hp['sparsity']) * sum(sizes) if hp['sparsity'] else sum(
          sizes)
      assert sum(live) <= max(math.ceil(cap), sum(core) + len(core)), where
  elif family == 'flash':
    # Stage 1 moves density between layers; the total stays within S (JMWST
    # floors k_l = b_l · min(1, d·N / Σb), and with budgets b_l counts the
    # aggregate's nonzeros: FLASH's rules).
    assert all(n > 0 for n in live), where
    assert sum(live) <= sum(layout.live_counts), where
    if hp['algorithm'] == 'flash_spdst' and previous is not None and (
        round_num > 1):
      assert live == previous, f'{where}: SPDST keeps its stage-1 mask'
  else:  # FedDST's server: exact per-layer counts of the round's sparsity.
    # The mask made in (0-based) round r - 1 holds after r rounds.
    s = schedules.sparsity_at_round(
        max(round_num - 1, 0), hp['sparsity'], hp['final_sparsity'],
        hp['readjustment_end_round'])
    expected = [int(n) for n in densities_lib.layer_live_counts(
        layout.kernel_shapes, s, hp['sparsity_distribution'] or 'erk')]
    if s == 0.0:
      expected = sizes
    assert live == expected, f'{where}, expected {expected} (S={s:.3f})'


def payload_nbytes(payload) -> int:
  return sum(np.asarray(t).nbytes for t in tf.nest.flatten(payload))


def check_bytes_are_payloads(built: lib.Built, first_round_metrics):
  """Round 1 again, through the process's own parts: the client work's
  counts equal its payloads' serialized bytes, and the process counted the
  same."""
  init_fn, distributor, client_work = built.parts[:3]
  data_type = client_work.next.type_signature.parameter[2]

  @tff.federated_computation(data_type)
  def first_round(data):  # As compose_learning_process wires the parts.
    weights = tff.federated_eval(init_fn, tff.SERVER)
    sent = distributor.next(distributor.initialize(), weights).result
    out = client_work.next(client_work.initialize(), sent, data)
    return sent, out.result, out.measurements

  sent, results, measurements = first_round(built.data)
  counted = measurements['round']
  uplink = sum(payload_nbytes(r.update) for r in results)
  assert counted['uplink_bytes'] == uplink
  assert counted['downlink_bytes'] == lib.NUM_CLIENTS * payload_nbytes(sent)
  process_counted = first_round_metrics['client_work']['round']
  assert process_counted['uplink_bytes'] == uplink
  assert process_counted['downlink_bytes'] == counted['downlink_bytes']


def check_resume_is_exact(built: lib.Built, state, next_out, root_dir):
  """`state` saved and loaded by TFF's `FileProgramStateManager` is the same
  state, and continues as `state` did (`next_out`: its next round): exactly,
  but for DP runs, whose Gaussian noise is fresh on every draw by design."""
  manager = tff.program.FileProgramStateManager(str(root_dir))
  asyncio_run(manager.save(state, 1))
  loaded, version = asyncio_run(manager.load_latest(
      built.process.initialize()))
  assert version == 1
  for x, y in zip(tf.nest.flatten(loaded), tf.nest.flatten(state)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  again = built.process.next(loaded, built.data)
  assert (again.metrics['client_work']['round']['uplink_bytes'] ==
          next_out.metrics['client_work']['round']['uplink_bytes'])
  if built.hparams['dp_noise_multiplier'] is not None:
    for x, y in zip(kernels_and_masks(built, again.state)[1],
                    kernels_and_masks(built, next_out.state)[1]):
      np.testing.assert_array_equal(x, y)
    return
  a = built.process.get_model_weights(again.state)
  b = built.process.get_model_weights(next_out.state)
  for x, y in zip(list(a.trainable) + list(a.non_trainable),
                  list(b.trainable) + list(b.non_trainable)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def asyncio_run(coroutine):
  import asyncio  # pylint: disable=g-import-not-at-top
  return asyncio.run(coroutine)


def run_and_check(built: lib.Built, root_dir):
  state = built.process.initialize()
  live = check_masked_weights(built, state, 'init')
  check_density_promise(built, live, 0, None)
  outs = []
  for r in range(1, lib.ROUNDS + 1):
    if r == lib.ROUNDS:
      before_last = state
    out = built.process.next(state, built.data)
    state = out.state
    outs.append(out)
    previous, live = live, check_masked_weights(built, state, f'round {r}')
    check_density_promise(built, live, r, previous)
    assert out.metrics['client_work']['round']['clients'] == lib.NUM_CLIENTS
  check_bytes_are_payloads(built, outs[0].metrics)
  check_resume_is_exact(built, before_last, outs[-1], root_dir)
