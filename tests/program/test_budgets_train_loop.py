"""The training loop with per-client density budgets, in-process: the budgets
reach the clients, per-group columns, per-group evaluation (against a
per-client loop), hparams.json, exact resume, and mismatch refusals."""

import collections
import csv

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import algorithms
from tff_feddst import data
from tff_feddst import models
from tff_feddst import program
from tff_feddst.program import evaluation
from tff_feddst.sparsity import budgets

BUDGETS = '0.05:0.3,0.1:0.3,0.2:0.4'
HPARAMS = {'algorithm': 'feddst', 'sparsity': 0.8,
           'client_density_budgets': BUDGETS}


def loss_fn():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope='module')
def setup():
  federated = data.build_federated_data(
      data.load('digits'), partition='dirichlet', num_clients=10, beta=0.5,
      seed=0)
  model_fn = models.get_model_fn('mlp', federated.input_shape,
                                 federated.num_classes)
  kwargs = dict(
      loss_fn=loss_fn, input_spec=program.batch_input_spec(federated, 16),
      metrics_fn=lambda: [tf.keras.metrics.SparseCategoricalAccuracy()],
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.05,
                                                             momentum=0.9),
      sparsity=0.8, readjustment_ratio=0.2, rounds_between_readjustments=1,
      readjustment_end_round=10, seed=0)
  process = algorithms.build_weighted_feddst(
      model_fn, client_density_budgets=BUDGETS, **kwargs)
  plain = algorithms.build_weighted_feddst(model_fn, **kwargs)
  return federated, model_fn, process, plain


def config(root_dir, **overrides):
  kwargs = dict(root_dir=str(root_dir), rounds=2, clients_per_round=4,
                batch_size=16, seed=1, eval_every=1, checkpoint_every=1,
                client_density_budgets=BUDGETS)
  kwargs.update(overrides)
  return program.TrainConfig(**kwargs)


def run(setup, cfg, process=None, hparams=None):
  federated, model_fn, budgeted, _ = setup
  return program.train(process or budgeted, federated, cfg,
                       model_fn=model_fn, loss_fn=loss_fn,
                       hparams=HPARAMS if hparams is None else hparams)


def read_csv(root_dir):
  with open(program.RunPaths.of(root_dir).metrics_csv, newline='') as f:
    return list(csv.DictReader(f))


def without_wall_clock(rows):
  return [{k: v for k, v in row.items() if not k.startswith('time/')}
          for row in rows]


@pytest.fixture(scope='module')
def reference_run(setup, tmp_path_factory):
  root = tmp_path_factory.mktemp('budget_run')
  return root, run(setup, config(root))


def test_rounds_release_per_group_columns(setup, reference_run):
  federated = setup[0]
  root, result = reference_run
  rows = read_csv(root)
  assert [r['round'] for r in rows] == ['1', '2']
  assignment = budgets.assign(budgets.parse(BUDGETS), federated.client_ids,
                              seed=1)
  n = sum(int(np.prod(s)) for s in models.kernel_shapes(
      models.make_prunable(setup[1](), log=False)))
  for round_num, row in enumerate(rows, start=1):
    sampled = program.sample_clients(federated.client_ids, 4, seed=1,
                                     round_num=round_num)
    sizes = collections.Counter(assignment[c] for c in sampled)
    for density in (0.05, 0.1, 0.2):
      label = budgets.label(density)
      assert int(row[f'round/budget/{label}/clients']) == sizes[density]
      assert row[f'round/budget/{label}/over_budget_clients'] == '0'
      if sizes[density]:
        live = float(row[f'round/budget/{label}/live_weights_per_client'])
        assert 0 < live <= density * n + 2  # + the >= 1 per layer rule
        assert float(row[f'round/budget/{label}/uplink_bytes_per_client']) > 0
      accuracy = float(row[f'test/budget/{label}/client_mean_accuracy'])
      assert 0.0 <= accuracy <= 1.0
  assert result.rounds_completed == 2
  recorded = program.read_hparams(root)
  assert recorded['client_density_budgets'] == BUDGETS


def test_group_evaluation_matches_a_per_client_loop(setup, reference_run):
  """Each group's number = mean over its clients of the accuracy of the
  global model pruned by numpy's rule to that budget."""
  federated, model_fn, process, _ = setup
  _, result = reference_run
  weights = process.get_model_weights(result.state)
  assignment = budgets.assign(budgets.parse(BUDGETS), federated.client_ids,
                              seed=1)
  evaluator = evaluation.Evaluator(federated, model_fn, loss_fn,
                                   budgets=budgets.parse(BUDGETS),
                                   assignment=assignment)
  got = evaluator(weights)
  wrapped = models.keras_model_from_weights(model_fn, weights,
                                                strip=False)
  pairs = models.masked_kernels(wrapped)
  kernels = [p.kernel.numpy() for p in pairs]
  masks = [p.mask.numpy() for p in pairs]
  for density in (0.05, 0.1, 0.2):
    sub = budgets.budget_masks(kernels, masks, density)
    model = models.keras_model_from_weights(model_fn, weights,
                                                strip=False)
    for p, s in zip(models.masked_kernels(model), sub):
      p.mask.assign(s)
    plain = models.strip(model)
    accuracies = []
    for cid in federated.test.client_ids:
      if assignment[cid] != density:
        continue
      examples = list(federated.test.create_tf_dataset_for_client(
          cid).as_numpy_iterator())
      if not examples:
        continue
      x = np.stack([e['x'] for e in examples])
      y = np.array([e['y'] for e in examples])
      accuracies.append(np.mean(np.argmax(plain(x).numpy(), -1) == y))
    label = budgets.label(density)
    assert got[f'test/budget/{label}/clients'] == len(accuracies)
    assert got[f'test/budget/{label}/client_mean_accuracy'] == pytest.approx(
        np.mean(accuracies), abs=1e-9)


def test_resume_equals_uninterrupted(setup, reference_run, tmp_path):
  root, full = reference_run
  run(setup, config(tmp_path, rounds=1))
  resumed = run(setup, config(tmp_path))
  assert without_wall_clock(read_csv(tmp_path)) == without_wall_clock(
      read_csv(root))
  for a, b in zip(full.state.global_model_weights.trainable,
                  resumed.state.global_model_weights.trainable):
    np.testing.assert_array_equal(a, b)


def test_process_and_config_must_agree(setup, tmp_path):
  plain = setup[3]
  with pytest.raises(ValueError, match='built without client_density_budgets'):
    run(setup, config(tmp_path / 'a'), process=plain)
  with pytest.raises(ValueError, match='built with client_density_budgets'):
    run(setup, config(tmp_path / 'b', client_density_budgets=None),
        hparams={'algorithm': 'feddst'})


def test_train_config_refuses_bad_budgets(tmp_path):
  with pytest.raises(ValueError,
                     match='TrainConfig.client_density_budgets: the fractions'):
    config(tmp_path, client_density_budgets='0.1:0.5')
