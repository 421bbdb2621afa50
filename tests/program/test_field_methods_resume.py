"""FLASH, SparsyFed and PruneFL resume exactly through the train loop, in-process: a
run cut back to its round-1 checkpoint and resumed equals the uninterrupted
run, row for row and weight for weight. (The launcher-level versions are in
the slow set: tests/launchers/test_launchers_{flash,sparsyfed}.py.)"""

import csv
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tff_feddst import data
from tff_feddst import models
from tff_feddst import program
from tff_feddst.algorithms import registry


def loss_fn():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope='module')
def federated():
  return data.build_federated_data(data.load('digits'), partition='dirichlet',
                                   num_clients=10, beta=0.5, seed=0)


def rows(root):
  with open(program.RunPaths.of(root).metrics_csv, newline='') as f:
    return [{k: v for k, v in r.items() if not k.startswith('time/')}
            for r in csv.DictReader(f)]


@pytest.mark.parametrize('algorithm', ['flash_spdst', 'flash_jmwst',
                                       'sparsyfed', 'prunefl'])
def test_cut_back_run_resumes_exactly(federated, algorithm, tmp_path):
  """PruneFL reconfigures in rounds 2 and 3 (R_adj = 1), after the cut; its
  round-2 reconfiguration sums the importance of rounds 1 and 2, so the sum
  of round 1 must come back from the checkpoint."""
  model_fn = models.get_model_fn('mlp', federated.input_shape,
                                 federated.num_classes)
  hp = registry.resolve(algorithm, {'sparsity': 0.8, 'client_epochs': 2},
                        rounds=3, size_defaults={
                            'rounds_between_readjustments': 1})
  hp['algorithm'] = algorithm
  process = registry.build(
      hp, model_fn, loss_fn=loss_fn,
      input_spec=program.batch_input_spec(federated, 16),
      metrics_fn=lambda: [tf.keras.metrics.SparseCategoricalAccuracy()],
      seed=0, initial_client_data=program.initial_client_dataset(
          federated, 16, seed=0))

  def train(root):
    return program.train(
        process, federated, program.TrainConfig(
            root_dir=str(root), rounds=3, clients_per_round=3,
            batch_size=16, seed=1, eval_every=1, checkpoint_every=1),
        model_fn=model_fn, loss_fn=loss_fn, hparams=hp)

  full = train(tmp_path / 'full')
  cut = tmp_path / 'cut'
  shutil.copytree(tmp_path / 'full', cut)
  for r in (2, 3):  # As if it died right after checkpointing round 1.
    shutil.rmtree(program.RunPaths.of(cut).checkpoints / f'program_state_{r}')
  resumed = train(cut)
  assert resumed.rounds_completed == 3
  assert rows(cut) == rows(tmp_path / 'full')
  if algorithm == 'prunefl':
    assert [r['finalizer/importance_client_rounds'] for r in rows(cut)] == [
        '3', '6', '3']
  for a, b in zip(tf.nest.flatten(full.state.global_model_weights),
                  tf.nest.flatten(resumed.state.global_model_weights)):
    np.testing.assert_array_equal(a, b)
