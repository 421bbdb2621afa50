"""The algorithm registry: options, defaults and checks. (That each entry
builds and trains is the conformance suite's: tests/conformance.)"""

import json

import pytest

from tff_feddst.algorithms import registry
from test_feddst_execution import SPEC, loss_fn, model_fn

SIZE = dict(rounds_between_readjustments=3)


def resolve(algorithm, rounds=40, **given):
  return registry.resolve(algorithm, given, rounds=rounds, size_defaults=SIZE)



def test_defaults_by_algorithm_and_context():
  hp = resolve('feddst', rounds=40, client_epochs=4)
  assert (hp['sparsity'], hp['readjustment_ratio'],
          hp['rounds_between_readjustments'], hp['readjustment_end_round'],
          hp['readjust_after_epoch'], hp['prox_mu']) == (0.8, 0.05, 3, 20, 4,
                                                         0.0)
  hp = resolve('fedavgm')
  assert (hp['server_momentum'], hp['sparsity'], hp['readjustment_ratio'],
          hp['sparsity_distribution'], hp['readjust_after_epoch']) == (
              0.9, 0.0, 0.0, None, None)
  assert resolve('fedprox')['prox_mu'] == 1.0
  assert resolve('random_mask')['readjustment_ratio'] == 0.0
  # Every key is recorded for every algorithm (hparams.json stays comparable).
  assert set(resolve('fedavg')) == set(registry.OPTIONS)


@pytest.mark.parametrize('algorithm,given,name', [
    ('feddst', dict(sparsity=1.0), 'sparsity'),
    ('feddst', dict(readjust_after_epoch=11), 'readjust_after_epoch'),
    ('feddst', dict(client_epochs=2, readjust_after_epoch=3),
     'readjust_after_epoch'),
    ('feddst', dict(sparsity=0.9, final_sparsity=0.85), 'final_sparsity'),
    ('feddst', dict(upload_dtype='int8'), 'upload_dtype'),
    ('fedavg', dict(sparsity=0.5), 'sparsity applies only to'),
    ('random_mask', dict(remember_old=True), 'remember_old applies only'),
    ('fedprox', dict(prox_mu=0.0), 'prox_mu must be > 0'),
    ('fedsgd', {}, 'algorithm must be one of'),
    ('prunefl', dict(prunefl_max_decrease=1.0), 'prunefl_max_decrease'),
    ('prunefl', dict(prunefl_bandwidth_mbps=0.0), 'prunefl_bandwidth_mbps'),
    ('prunefl', dict(prunefl_compute_gflops=-1.0), 'prunefl_compute_gflops'),
    ('prunefl', dict(prunefl_round_overhead=-0.1), 'prunefl_round_overhead'),
    ('prunefl', dict(prunefl_initial_interval_steps=0),
     'prunefl_initial_interval_steps must be >= 1'),
    ('prunefl', dict(prunefl_initial_reconfigurations=0),
     'prunefl_initial_reconfigurations must be >= 1'),
    ('prunefl', dict(prunefl_time_coefficients='/nonexistent.json'),
     r'prunefl_time_coefficients must be flops or measured coefficients '
     r'\(the JSON file .* writes\): cannot read /nonexistent.json'),
    ('prunefl', dict(prunefl_time_coefficients='{"kernel_sizes": [3]}'),
     'prunefl_time_coefficients .* missing .*base_seconds_per_example'),
    ('prunefl', dict(rounds_between_readjustments=0),
     'rounds_between_readjustments'),
    ('prunefl', dict(readjustment_ratio=0.1), 'readjustment_ratio applies'),
    ('prunefl', dict(sparsity=0.8, client_density_budgets='0.1:1'),
     'client_density_budgets applies only to'),
    ('prunefl', dict(dp_noise_multiplier=1.0, dp_clip_norm=1.0),
     'dp_noise_multiplier cannot be used with algorithm=prunefl'),
    ('feddst', dict(prunefl_max_decrease=0.2), 'applies only to'),
])
def test_bad_values_are_refused_naming_the_option(algorithm, given, name):
  with pytest.raises(registry.OptionError, match=name):
    resolve(algorithm, **given)


MEASURED = {'kernel_sizes': [36 * 12, 12 * 4], 'base_seconds_per_example': 1e-4,
            'seconds_per_weight_per_example': [0.0, 2e-7], 'batch_size': 8}


def test_prunefl_time_defaults_follow_the_time_coefficients(tmp_path):
  """'flops': 14.4 GFLOP/s and 1 s of overhead; measured: no GFLOP/s, 0 s
  (the measured base compute stands for it), and the numbers recorded by
  value, so that a resumed run checks them, not a file's name."""
  hp = resolve('prunefl')
  assert (hp['prunefl_time_coefficients'], hp['prunefl_compute_gflops'],
          hp['prunefl_round_overhead'], hp['prunefl_initial_interval_steps'],
          hp['prunefl_initial_reconfigurations']) == ('flops', 14.4, 1.0, 500,
                                                      20)
  path = tmp_path / 'times.json'
  path.write_text(json.dumps(MEASURED))
  hp = resolve('prunefl', prunefl_time_coefficients=str(path))
  assert hp['prunefl_compute_gflops'] is None
  assert hp['prunefl_round_overhead'] == 0.0
  assert json.loads(hp['prunefl_time_coefficients']) == {
      k: v for k, v in MEASURED.items() if k != 'batch_size'}
  # The recorded text resolves to itself (a resumed run compares equal).
  assert resolve('prunefl', prunefl_time_coefficients=hp[
      'prunefl_time_coefficients'])['prunefl_time_coefficients'] == hp[
          'prunefl_time_coefficients']
  with pytest.raises(registry.OptionError,
                     match='prunefl_compute_gflops applies only with '
                     'prunefl_time_coefficients=flops'):
    resolve('prunefl', prunefl_time_coefficients=str(path),
            prunefl_compute_gflops=2.0)
  assert resolve('feddst')['prunefl_time_coefficients'] is None


def test_builder_signature_is_explicit_and_covers_every_option():
  """The public builder lists its arguments (no **kwargs), and every option an
  algorithm passes to the FedDST builder is one of them."""
  import inspect  # pylint: disable=g-import-not-at-top
  from tff_feddst.algorithms import feddst  # pylint: disable=g-import-not-at-top
  params = inspect.signature(feddst.build_weighted_feddst).parameters
  assert all(p.kind is not inspect.Parameter.VAR_KEYWORD
             for p in params.values())
  assert all(p.annotation is not inspect.Parameter.empty
             for p in params.values())
  for config in registry.ALGORITHMS.values():
    if config.builder.endswith(':build_weighted_feddst'):
      assert set(config.options) | set(config.builder_args) <= set(params)


def test_components_refuse_an_unknown_argument_naming_it():
  from tff_feddst.algorithms import feddst  # pylint: disable=g-import-not-at-top
  with pytest.raises(TypeError, match="unexpected keyword argument 'sparsty'"):
    feddst.build_feddst_components(model_fn, loss_fn=loss_fn, input_spec=SPEC,
                                   client_optimizer_fn=None, sparsity=0.5,
                                   readjustment_ratio=0.0, sparsty=0.5)
