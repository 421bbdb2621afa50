"""Every algorithm the launcher offers, its hyperparameters, defaults and checks.

The one home of the algorithm choice: `launchers/train.py` defines its
algorithm flags from `OPTIONS`, validates them with `resolve` and records the
result in hparams.json; `build` turns that record into the learning process;
the benchmarks name algorithms and options through it. It is the one
validator: the builders check their arguments with `check_builder_args` (the
same rules and messages, without flag prefixes) and check themselves only
what no option holds. Adding an algorithm is
one `AlgorithmConfig` in `ALGORITHMS` (plus its builder and tests).

Imports no TensorFlow (the builders are imported by `build`), so a command
line can print its help or refuse a bad flag at once.

Why one file of ~550 lines: two thirds of it is the two tables (`OPTIONS`,
`ALGORITHMS`), data that the checks below read; split apart, each rule
would live in two files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import importlib
from typing import Any

from tff_feddst import choices



class OptionError(ValueError):
  """A hyperparameter value an algorithm refuses; the message names it."""


@dataclasses.dataclass(frozen=True)
class Option:
  """One hyperparameter.

  Attributes:
    name: the builder/hparams key and, with '--', the launcher flag.
    type: float, int, bool or str.
    default: a value, or a function of the resolved context (the values
      resolved so far plus `rounds` and the run-size defaults).
    help: one line for --help.
    check: True when a value is acceptable (given the context).
    expected: what `check` wants, for the error message.
    choices: allowed values of a str option.
    off: the value recorded for algorithms that do not take it.
  """
  name: str
  type: type
  default: Any
  help: str
  check: Callable[[Any, Mapping[str, Any]], bool] = lambda v, ctx: True
  expected: str = ''
  choices: tuple[str, ...] | None = None
  off: Any = None

  def default_for(self, ctx: Mapping[str, Any]):
    return self.default(ctx) if callable(self.default) else self.default


def _within(lo, hi, *, lo_open=False, hi_open=False):
  def check(v, ctx):
    del ctx
    return ((v > lo if lo_open else v >= lo) and
            (hi is None or (v < hi if hi_open else v <= hi)))
  return check


def _final_sparsity_ok(v, ctx):
  return v is None or ctx['sparsity'] <= v < 1.0


def _after_epoch_ok(v, ctx):
  return 1 <= v <= ctx['client_epochs']


OPTIONS: dict[str, Option] = {o.name: o for o in (
    # Client and server optimization (every algorithm).
    Option('client_epochs', int, 10, 'E, local epochs per round.',
           _within(1, None), '>= 1'),
    Option('client_learning_rate', float, 0.01, 'Client SGD learning rate.',
           _within(0, None, lo_open=True), '> 0'),
    Option('client_momentum', float, 0.9, 'Client SGD momentum.',
           _within(0, 1, hi_open=True), 'in [0, 1)'),
    Option('client_weight_decay', float, 1e-3, 'Client L2 strength λ.',
           _within(0, None), '>= 0'),
    Option('server_learning_rate', float, 1.0,
           'Server SGD learning rate (a server optimizer runs when it is not '
           '1 or the server momentum is > 0).',
           _within(0, None, lo_open=True), '> 0'),
    Option('server_momentum', float, 0.0, 'Server SGD momentum.',
           _within(0, 1, hi_open=True), 'in [0, 1)'),
    Option('upload_dtype', str, 'float32',
           'Type of the uploaded values (16 bits halve their bytes).',
           choices=choices.UPLOAD_DTYPES),
    Option('client_jit_compile', bool, None,
           'XLA-compile each client training step; default off (slower for '
           'the paper CNN on a 2-core CPU: docs/performance.md).'),
    # Sparse algorithms.
    Option('sparsity', float, 0.8, 'S, global sparsity of the prunable '
           'kernels.', _within(0, 1, hi_open=True), 'in [0, 1)', off=0.0),
    Option('sparsity_distribution', str, 'feddst_erk',
           'How S is spread over layers.',
           choices=choices.SPARSITY_DISTRIBUTIONS),
    Option('min_votes', int, 0, 'Client votes a weight needs to enter the '
           'union mask.', _within(0, None), '>= 0'),
    Option('final_sparsity', float, None,
           'Target sparsity reached linearly by --readjustment_end_round; '
           'default: constant --sparsity.', _final_sparsity_ok,
           'in [--sparsity, 1): the server can only prune towards it'),
    Option('client_density_budgets', str, None,
           'Per-client density budgets as density:fraction pairs, e.g. '
           '0.05:0.3,0.1:0.3,0.2:0.4: each client gets one (by --seed) and '
           'trains and uploads at most that share of the weights, the '
           'largest |w| of the global mask per layer (docs/algorithms.md); '
           'default: every client keeps the global mask.'),
    # Algorithms that readjust masks.
    Option('readjustment_ratio', float, 0.05, 'α, fraction of live weights '
           'readjusted.', _within(0, 1), 'in [0, 1]', off=0.0),
    Option('rounds_between_readjustments', int,
           lambda ctx: ctx['size']['rounds_between_readjustments'],
           'R_adj.', _within(1, None), '>= 1'),
    Option('readjustment_end_round', int, lambda ctx: ctx['rounds'] // 2,
           'R_end, no readjustment from this round on; default rounds // 2, '
           'as the reference.', _within(0, None), '>= 0'),
    Option('readjustment_schedule', str, 'cosine', 'Decay of α over rounds.',
           choices=choices.READJUSTMENT_SCHEDULES),
    Option('readjust_after_epoch', int, lambda ctx: ctx['client_epochs'],
           'k: clients readjust after local epoch k and train the remaining '
           'epochs on the new mask; default: after the last epoch.',
           _after_epoch_ok, 'in [1, --client_epochs]'),
    Option('remember_old', bool, False,
           "The server's mask decision counts a client's dropped weights with "
           "the server's previous values (the reference's --remember-old)."),
    # SparsyFed (tff_feddst/algorithms/sparsyfed.py).
    Option('sparsyfed_beta', float, 1.25,
           'β of Powerpropagation, w = sign(v)|v|^β (1: plain training, the '
           "Top-K baseline); SparsyFed's one hyperparameter.",
           _within(1, None), '>= 1'),
    # FLASH (tff_feddst/algorithms/flash.py).
    Option('flash_prune_rate', float, 0.25,
           "p_0, FLASH's client prune rate at the start of a round (it decays "
           'linearly to 0 over the local epochs); flash_jmwst: over rounds '
           'by --readjustment_schedule (default constant) until '
           '--readjustment_end_round (default --rounds).',
           _within(0, 1, lo_open=True),
           'in (0, 1]', off=0.0),
    # PruneFL (tff_feddst/algorithms/prunefl.py).
    Option('prunefl_max_decrease', float, 0.3,
           "δ, PruneFL's max decrease: the share of each layer's live weights "
           'a reconfiguration may drop, smallest |w| first (the authors\' '
           '0.3).', _within(0, 1, hi_open=True), 'in [0, 1)'),
    Option('prunefl_time_coefficients', str, choices.PRUNEFL_FLOPS,
           "The per-layer compute seconds of PruneFL's round-time model: "
           f"'{choices.PRUNEFL_FLOPS}' (6·FLOPs per weight per example at "
           '--prunefl_compute_gflops), or the JSON file of measured ones '
           'that benchmarks/prunefl_time_coefficients.py writes (the '
           "authors' per-layer coefficients; recorded in hparams.json by "
           'value).'),
    Option('prunefl_bandwidth_mbps', float, 1.0,
           "The client link of PruneFL's round-time model, MB/s.",
           _within(0, None, lo_open=True), '> 0'),
    Option('prunefl_compute_gflops', float,
           lambda ctx: (14.4 if ctx['prunefl_time_coefficients'] ==
                        choices.PRUNEFL_FLOPS else None),
           "With --prunefl_time_coefficients=flops, the client training rate "
           "of PruneFL's round-time model, GFLOP/s (default: this project's "
           'measured floor, docs/performance.md).',
           _within(0, None, lo_open=True), '> 0'),
    Option('prunefl_round_overhead', float,
           lambda ctx: (1.0 if ctx['prunefl_time_coefficients'] ==
                        choices.PRUNEFL_FLOPS else 0.0),
           "The fixed seconds of a round in PruneFL's round-time model "
           '(besides the dense params and mask bits on the link, and the '
           'measured mask-independent compute); default 1 with flops, 0 '
           'with measured coefficients.',
           _within(0, None), '>= 0'),
    Option('prunefl_initial_interval_steps', int, 500,
           "k: PruneFL's initial pruning on one client reconfigures every k "
           "local steps (the authors' 50 rounds of 10 steps).",
           _within(1, None), '>= 1'),
    Option('prunefl_initial_reconfigurations', int, 20,
           "At most this many reconfigurations in PruneFL's initial pruning: "
           'it trains at most this many × k local steps, and stops earlier '
           'once the density settles.', _within(1, None), '>= 1'),
    # FedProx clients.
    Option('prox_mu', float, 1.0, 'FedProx μ (the reference uses 1).',
           _within(0, None, lo_open=True), '> 0', off=0.0),
    # Differential privacy (DP-FedAvg on a fixed mask; tff_feddst/privacy).
    Option('dp_noise_multiplier', float, None,
           'z: DP-FedAvg, Gaussian noise of stddev z·C on the clipped sum of '
           'client deltas (0: clipping only); default: no DP. Fixes the '
           'mask (needs --readjustment_ratio=0: random_mask or fedavg).',
           _within(0, None), '>= 0'),
    Option('dp_clip_norm', float, None,
           'C: L2 bound of each client delta (fixed clipping).',
           _within(0, None, lo_open=True), '> 0'),
    Option('dp_adaptive_quantile', float, None,
           'Instead of --dp_clip_norm: clip adaptively at this quantile of '
           'the update norms (Andrew et al. 2021).',
           _within(0, 1, lo_open=True, hi_open=True), 'in (0, 1)'),
    Option('dp_delta', float, None,
           'δ of the reported privacy/epsilon; default 1 / the clients of '
           'the federation.', _within(0, 1, lo_open=True, hi_open=True),
           'in (0, 1)'),
)}

_SHARED = ('client_epochs', 'client_learning_rate', 'client_momentum',
           'client_weight_decay', 'server_learning_rate', 'server_momentum',
           'upload_dtype', 'client_jit_compile')
_SPARSE = ('sparsity', 'sparsity_distribution', 'min_votes',
           'client_density_budgets')
# final_sparsity moves the target until R_end, so it goes with readjustment.
_READJUSTING = ('readjustment_ratio', 'rounds_between_readjustments',
                'readjustment_end_round', 'readjustment_schedule',
                'readjust_after_epoch', 'remember_old', 'final_sparsity')
_PRIVACY = ('dp_noise_multiplier', 'dp_clip_norm', 'dp_adaptive_quantile',
            'dp_delta')


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
  """One algorithm: its builder, the options it takes, its own defaults.

  Attributes:
    name: the `--algorithm` value.
    summary: one sentence for --help.
    builder: 'module:function' of a builder taking `model_fn` and keyword
      arguments (imported only by `build`).
    options: the `OPTIONS` it takes besides the shared ones.
    defaults: its own defaults, overriding the options' (a value, or a
      function of the resolved context, as `Option.default`).
    builder_args: fixed keyword arguments of the builder.
  """
  name: str
  summary: str
  builder: str
  options: tuple[str, ...] = ()
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  builder_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # Why resolved hparams cannot go together for this algorithm (None: they
  # can); '--' in the message becomes the flag prefix.
  refuse: Callable[[Mapping[str, Any]], str | None] | None = None
  # The builder starts on one client's data (`initial_client_data`, from
  # `program.initial_client_dataset`; PruneFL's initial pruning).
  initial_client: bool = False

  @property
  def takes(self) -> tuple[str, ...]:
    return _SHARED + _PRIVACY + self.options


_FEDDST = 'tff_feddst.algorithms.feddst:build_weighted_feddst'
_FLASH = 'tff_feddst.algorithms.flash:build_weighted_flash'
_FLASH_OPTIONS = ('sparsity', 'client_density_budgets', 'flash_prune_rate')


def _no_dp(algorithm: str, why: str):
  """A refusal of DP for an algorithm whose clients' masks depend on their
  data and travel outside the noised sum."""
  def refuse(hp: Mapping[str, Any]) -> str | None:
    if hp['dp_noise_multiplier'] is not None:
      return (f'--dp_noise_multiplier cannot be used with {algorithm}: its '
              f'clients upload data-dependent masks ({why}) outside the '
              'noised sum.')
    return None
  return refuse


def _flash_refusal(hp: Mapping[str, Any]) -> str | None:
  if hp['sparsity'] <= 0.0:
    return ('--sparsity must be > 0 for FLASH (it trains a sparse model), '
            f'got {hp["sparsity"]!r}.')
  return _no_dp('FLASH', 'their DST')(hp)


def _prunefl_refusal(hp: Mapping[str, Any]) -> str | None:
  if (hp['prunefl_time_coefficients'] != choices.PRUNEFL_FLOPS and
      hp['prunefl_compute_gflops'] is not None):
    return ('--prunefl_compute_gflops applies only with '
            f'--prunefl_time_coefficients={choices.PRUNEFL_FLOPS} (measured '
            'coefficients give the compute times).')
  return _no_dp('--algorithm=prunefl', 'their dense squared gradients, '
                'which choose the mask')(hp)


_BASELINES = 'tff_feddst.algorithms.baselines'
ALGORITHMS: dict[str, AlgorithmConfig] = {a.name: a for a in (
    AlgorithmConfig('feddst', 'FedDST (Bibikar et al., AAAI 2022).', _FEDDST,
                    _SPARSE + _READJUSTING),
    AlgorithmConfig('fedavg', 'dense FedAvg.',
                    f'{_BASELINES}:build_weighted_fed_avg'),
    AlgorithmConfig('fedavgm', 'FedAvg with server momentum.',
                    f'{_BASELINES}:build_weighted_fed_avg',
                    defaults={'server_momentum': 0.9}),
    AlgorithmConfig('fedprox', 'FedAvg with a proximal term.',
                    f'{_BASELINES}:build_weighted_fed_avg', ('prox_mu',)),
    AlgorithmConfig('random_mask', 'a fixed random-init magnitude mask.',
                    f'{_BASELINES}:build_weighted_random_mask', _SPARSE),
    AlgorithmConfig('feddst_prox', 'FedDST with FedProx clients.', _FEDDST,
                    _SPARSE + _READJUSTING + ('prox_mu',)),
    AlgorithmConfig('feddst_consensus',
                    'FedDST whose server reserves a share of each '
                    'readjustment for the weights most clients regrew '
                    '(tff_feddst/sparsity/server_masks.py).', _FEDDST,
                    _SPARSE + _READJUSTING,
                    builder_args={'consensus_regrowth': True}),
    AlgorithmConfig('prunefl',
                    'PruneFL (Jiang et al., IEEE TNNLS 2022): initial pruning '
                    'on one client, then every R_adj rounds the mask that '
                    'maximises importance (aggregated squared gradients) per '
                    'modelled round time; --sparsity caps the density at '
                    '1 - S (0: no cap).',
                    'tff_feddst.algorithms.prunefl:build_weighted_prunefl',
                    ('sparsity', 'rounds_between_readjustments',
                     'prunefl_max_decrease', 'prunefl_time_coefficients',
                     'prunefl_bandwidth_mbps', 'prunefl_compute_gflops',
                     'prunefl_round_overhead',
                     'prunefl_initial_interval_steps',
                     'prunefl_initial_reconfigurations'),
                    defaults={'sparsity': 0.0},
                    # Budgets: not taken (PruneFL sizes the model itself).
                    refuse=_prunefl_refusal,
                    initial_client=True),
    AlgorithmConfig('sparsyfed',
                    'SparsyFed (Guastella et al., ICLR 2025): '
                    'Powerpropagation, activation pruning, clients prune to '
                    'S globally, FedAvg with the union mask.',
                    'tff_feddst.algorithms.sparsyfed:build_weighted_sparsyfed',
                    ('sparsity', 'sparsyfed_beta'),
                    refuse=_no_dp('--algorithm=sparsyfed',
                                  'their own global top-k')),
    AlgorithmConfig('flash_spdst',
                    'FLASH SPDST (Babakniya et al., TMLR 2023): a stage-1 '
                    'layer profile from client DST in round 1, then a static '
                    'random mask with it.', _FLASH, _FLASH_OPTIONS,
                    builder_args={'variant': 'spdst'},
                    refuse=_flash_refusal),
    AlgorithmConfig('flash_jmwst',
                    'FLASH JMWST: stage 1, then client DST every round and '
                    'the server mask = per-layer top-k of the mean.', _FLASH,
                    _FLASH_OPTIONS + ('readjustment_schedule',
                                      'readjustment_end_round'),
                    defaults={'readjustment_schedule': 'constant',
                              'readjustment_end_round':
                                  lambda ctx: ctx['rounds']},
                    builder_args={'variant': 'jmwst'},
                    refuse=_flash_refusal),
)}


def resolve(algorithm: str, given: Mapping[str, Any], *,
            rounds: int, size_defaults: Mapping[str, Any],
            flag_prefix: str = '') -> dict[str, Any]:
  """The effective hyperparameters of `algorithm` (defaults filled, checked).

  Args:
    algorithm: a key of `ALGORITHMS`.
    given: option values the user set (None or absent: not set).
    rounds: the run's rounds (for defaults such as R_end = rounds // 2).
    size_defaults: run-size defaults (e.g. rounds_between_readjustments).
    flag_prefix: put before option names in errors ('--' for flags).

  Returns:
    {option: value} for every option: the algorithm's own value, or the
    option's `off` value when the algorithm does not take it.

  Raises:
    OptionError: an unknown algorithm, a value out of range, or an option set
      for an algorithm that does not take it.
  """
  if algorithm not in ALGORITHMS:
    raise OptionError(f'{flag_prefix}algorithm must be one of '
                      f'{sorted(ALGORITHMS)}, got {algorithm!r}.')
  config = ALGORITHMS[algorithm]
  takes = set(config.takes)
  for name, value in given.items():
    if name not in OPTIONS:
      raise OptionError(f'Unknown option {flag_prefix}{name}.')
    if name not in takes and value not in (None, False, 0, 0.0):
      users = '|'.join(a.name for a in ALGORITHMS.values()
                       if name in a.takes)
      raise OptionError(f'{flag_prefix}{name} applies only to '
                        f'{flag_prefix}algorithm {users}; '
                        f'{algorithm} does not take it.')
  ctx: dict[str, Any] = {'rounds': rounds, 'size': dict(size_defaults)}
  resolved: dict[str, Any] = {}
  for name, option in OPTIONS.items():  # In order: defaults may use earlier.
    if name not in takes:
      resolved[name] = option.off
      continue
    value = given.get(name)
    if value is None:
      value = config.defaults.get(name, option.default_for(ctx))
      value = value(ctx) if callable(value) else value  # Own, by context.
    _check_value(option, value, ctx, flag_prefix)
    resolved[name] = value
    ctx[name] = value
  _check_together(config, resolved, flag_prefix)
  if resolved['client_density_budgets'] is not None:
    resolved['client_density_budgets'] = _budgets_text(resolved, flag_prefix)
  if resolved['prunefl_time_coefficients'] not in (None,
                                                   choices.PRUNEFL_FLOPS):
    resolved['prunefl_time_coefficients'] = _time_coefficients_text(
        resolved['prunefl_time_coefficients'], flag_prefix)
  return resolved


def _check_value(option: Option, value, ctx: Mapping[str, Any],
                 flag_prefix: str) -> None:
  """OptionError unless `value` is one of the option's choices and passes
  its check (None passes: not set)."""
  if option.choices is not None and value not in option.choices:
    raise OptionError(f'{flag_prefix}{option.name} must be one of '
                      f'{list(option.choices)}, got {value!r}.')
  if value is not None and not option.check(value, ctx):
    raise OptionError(f'{flag_prefix}{option.name} must be '
                      f'{option.expected.replace("--", flag_prefix)}, got '
                      f'{value!r}.')


def _check_together(config: AlgorithmConfig, hp: Mapping[str, Any],
                    flag_prefix: str) -> None:
  """OptionError if the algorithm's or DP's rules refuse these values."""
  refusal = (config.refuse and config.refuse(hp)) or _dp_refusal(hp)
  if refusal:
    raise OptionError(refusal.replace('--', flag_prefix))


def check_builder_args(algorithm: str, args: Mapping[str, Any]) -> None:
  """Refuses a builder's arguments that `algorithm`'s options forbid.

  The builders call it, so that a direct caller meets the rules (and the
  messages) the launcher's `resolve` applies, without flag prefixes: an
  option the algorithm takes is checked when given (not None); those it
  does not take are left to the builder, which ignores them. Values need
  not be the launcher's types: budgets may be (density, fraction) pairs.
  """
  config = ALGORITHMS[algorithm]
  takes = set(config.takes)
  hp = {name: option.off for name, option in OPTIONS.items()}
  for name, option in OPTIONS.items():  # In order: checks may use earlier.
    if name in takes and name in args:
      hp[name] = args[name]
      if name != 'client_density_budgets':  # Not only text: below.
        _check_value(option, args[name], args, '')
  _check_together(config, hp, '')
  if hp['client_density_budgets'] is not None:
    _budgets_text(hp, '')
  if hp['prunefl_time_coefficients'] not in (None, choices.PRUNEFL_FLOPS):
    _time_coefficients_text(hp['prunefl_time_coefficients'], '')


def _time_coefficients_text(value, flag_prefix: str) -> str:
  """The measured coefficients (a file's path, its text or a mapping) as
  canonical JSON text, so that hparams.json records (and a resumed run
  checks) the numbers, not a file that may change; or OptionError saying
  what is wrong."""
  from tff_feddst.sparsity import prunefl  # pylint: disable=g-import-not-at-top
  try:
    return prunefl.load_measured_compute(value).to_text()
  except ValueError as e:
    raise OptionError(f'{flag_prefix}prunefl_time_coefficients must be '
                      f'{choices.PRUNEFL_FLOPS} or measured coefficients '
                      '(the JSON file benchmarks/prunefl_time_coefficients.py '
                      f'writes): {e}') from None


def _budgets_text(hp: Mapping[str, Any], flag_prefix: str) -> str:
  """The canonical budget list, or OptionError saying what is wrong."""
  from tff_feddst.sparsity import budgets  # pylint: disable=g-import-not-at-top
  name = f'{flag_prefix}client_density_budgets'
  try:
    parsed = budgets.parse(hp['client_density_budgets'], name=name)
    budgets.check_sparsity(parsed, hp['sparsity'],
                           name=name, sparsity_name=f'{flag_prefix}sparsity')
  except budgets.BudgetError as e:
    raise OptionError(str(e)) from None
  if hp['dp_noise_multiplier'] is not None:
    raise OptionError(f'{name} cannot be used with {flag_prefix}'
                      'dp_noise_multiplier: DP runs upload a fixed-length '
                      'delta over the one global mask.')
  return budgets.to_text(parsed)


def _dp_refusal(hp: Mapping[str, Any]) -> str | None:
  """Why these DP options cannot go together (None: they can)."""
  if hp['dp_noise_multiplier'] is None:
    given = [n for n in _PRIVACY if hp[n] is not None]
    return (f'--{given[0]} needs --dp_noise_multiplier (differential '
            'privacy is off without it).' if given else None)
  if (hp['dp_clip_norm'] is None) == (hp['dp_adaptive_quantile'] is None):
    return ('--dp_noise_multiplier needs exactly one of --dp_clip_norm '
            '(fixed clipping) and --dp_adaptive_quantile (adaptive).')
  if hp['readjustment_ratio']:
    return ('--readjustment_ratio must be 0 with --dp_noise_multiplier: DP '
            'runs keep the global mask fixed, because readjusted client masks '
            "(and the server's vote counts over them) would reveal which "
            'weights each client keeps, outside the noised sum. Use '
            '--algorithm=random_mask (S>0) or fedavg (S=0), or '
            '--readjustment_ratio=0.')
  if hp['upload_dtype'] != 'float32':
    return ('--upload_dtype must be float32 with --dp_noise_multiplier (the '
            'noised deltas are summed in float32).')
  if hp['final_sparsity'] is not None:
    return ('--final_sparsity cannot be used with --dp_noise_multiplier (DP '
            'runs keep the mask, and so its sparsity, fixed).')
  return None


def _import(path: str) -> Callable:
  module, function = path.split(':')
  return getattr(importlib.import_module(module), function)


def build(hparams: Mapping[str, Any], model_fn, *, loss_fn, input_spec,
          metrics_fn=None, seed: int | None = None, initial_weights=None,
          initial_client_data=None, client_optimizer_fn=None):
  """The learning process that `hparams` (from `resolve`) describes.

  `initial_weights` (a Keras model or its weight arrays) warm-starts it.
  `initial_client_data` (batched) is the one client's data that algorithms
  with `initial_client` start on (`program.initial_client_dataset`).
  With `dp_noise_multiplier` set, `hparams['clients_per_round']` is the DP
  mean's fixed denominator. `client_optimizer_fn` (a `tff.learning.
  optimizers.Optimizer` or a no-arg function returning one) replaces the
  SGD with momentum that `hparams` describes.
  """
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  config = ALGORITHMS[hparams['algorithm']]
  kwargs = dict(config.builder_args)
  kwargs.update(
      loss_fn=loss_fn, input_spec=input_spec, metrics_fn=metrics_fn,
      seed=seed,
      client_optimizer_fn=client_optimizer_fn or
      tff.learning.optimizers.build_sgdm(
          hparams['client_learning_rate'], momentum=hparams['client_momentum']),
      client_epochs=hparams['client_epochs'],
      client_weight_decay=hparams['client_weight_decay'],
      upload_dtype=hparams['upload_dtype'], initial_weights=initial_weights,
      client_jit_compile=bool(hparams.get('client_jit_compile')))
  if hparams['server_momentum'] > 0 or hparams['server_learning_rate'] != 1.0:
    kwargs['server_optimizer_fn'] = tff.learning.optimizers.build_sgdm(
        hparams['server_learning_rate'], momentum=hparams['server_momentum'])
  for name in config.options:
    kwargs[name] = hparams[name]
  if config.initial_client:
    kwargs['initial_client_data'] = initial_client_data
  if hparams.get('dp_noise_multiplier') is not None:
    kwargs.update(dp_noise_multiplier=hparams['dp_noise_multiplier'],
                  dp_clip_norm=hparams['dp_clip_norm'],
                  dp_adaptive_quantile=hparams['dp_adaptive_quantile'],
                  dp_clients_per_round=hparams['clients_per_round'])
  return _import(config.builder)(model_fn, **kwargs)
