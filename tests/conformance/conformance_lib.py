"""The conformance suite's cases: every registered algorithm, on a TFF user's
own data structures, Keras models and optimizers.

Cases come from `registry.ALGORITHMS` itself: an algorithm is crossed with
every variant whose options it takes (and whose values `registry.resolve`
accepts), so a newly registered algorithm is covered without editing the
suite. A case is built through `registry.build`, as the launcher builds it,
with the user's optimizer in place of the launcher's SGD.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import models as models_lib
from tff_feddst.algorithms import registry
from tff_feddst.sparse import layout as layout_lib
from tff_feddst.templates import hooks

L = tf.keras.layers
NUM_CLIENTS = 3
EXAMPLES = 12
BATCH = 4
ROUNDS = 2
CLASSES = 3

# Small settings every algorithm that takes them gets (a short run: masks
# readjust every round, PruneFL's initial pruning stops early).
BASE = {
    'client_epochs': 1, 'client_learning_rate': 0.05,
    'client_weight_decay': 1e-3, 'sparsity': 0.5,
    'sparsity_distribution': 'erk', 'readjustment_ratio': 0.2,
    'rounds_between_readjustments': 1, 'readjustment_end_round': 10,
    'prunefl_initial_interval_steps': 4,
    'prunefl_initial_reconfigurations': 2, 'flash_prune_rate': 0.25,
}

# The options that change a client's or the server's path. A variant applies
# to every algorithm that takes all its options.
VARIANTS = {
    'base': {},
    'readjust_within_epochs': {'client_epochs': 2, 'readjust_after_epoch': 1},
    'final_sparsity': {'final_sparsity': 0.75},
    'upload_bfloat16': {'upload_dtype': 'bfloat16'},
    'upload_float16': {'upload_dtype': 'float16'},
    'remember_old': {'remember_old': True},
    'budgets': {'client_density_budgets': '0.25:0.5,0.5:0.5'},
    'dp_fixed_clip': {'dp_noise_multiplier': 0.1, 'dp_clip_norm': 1.0},
    'dp_adaptive_clip': {'dp_noise_multiplier': 0.1,
                         'dp_adaptive_quantile': 0.5},
}
# 16-bit uploads change only the encoding: one dtype per algorithm is
# enough by default; the other runs in the full matrix.
_SLOW_VARIANTS = ('upload_float16',)


def hparams(algorithm: str, variant: str) -> dict[str, Any] | None:
  """The resolved hyperparameters, or None when the variant does not apply."""
  config = registry.ALGORITHMS[algorithm]
  options = VARIANTS[variant]
  if any(name not in config.takes for name in options):
    return None
  given = {k: v for k, v in BASE.items() if k in config.takes}
  if 'dp_noise_multiplier' in options and 'readjustment_ratio' in given:
    given['readjustment_ratio'] = 0.0  # DP keeps the mask fixed.
  given.update(options)
  try:
    hp = registry.resolve(algorithm, given, rounds=ROUNDS + 1,
                          size_defaults={'rounds_between_readjustments': 1})
  except registry.OptionError:
    return None
  return dict(hp, algorithm=algorithm, clients_per_round=NUM_CLIENTS)


def algorithm_cases() -> list[tuple[str, str]]:
  """(algorithm, variant) for every registered algorithm and variant that
  applies to it."""
  return [(a, v) for a in registry.ALGORITHMS for v in VARIANTS
          if hparams(a, v) is not None]


# The user's side: models, data structures, optimizers.
@dataclasses.dataclass(frozen=True)
class UserModel:
  """A Keras model builder and the features it reads."""
  build: Callable[[], tf.keras.Model]
  features: str  # 'vector', 'image', 'tokens' or 'named'.


def _sequential():
  return tf.keras.Sequential([L.Input((6,)), L.Dense(8, activation='relu'),
                              L.Dense(CLASSES)])


def _functional_bn():
  inputs = tf.keras.Input((4, 4, 1))
  h = L.Conv2D(4, 3, padding='same', activation='relu')(inputs)
  h = L.BatchNormalization()(h)
  return tf.keras.Model(inputs, L.Dense(CLASSES)(L.Flatten()(h)))


def _named_inputs_bn():
  pixels = tf.keras.Input((4, 4, 1), name='pixels')
  extra = tf.keras.Input((2,), name='extra')
  h = L.Conv2D(4, 3, padding='same', activation='relu')(pixels)
  h = L.Flatten()(L.BatchNormalization()(h))
  h = L.Concatenate()([h, L.Dense(4)(extra)])
  return tf.keras.Model({'pixels': pixels, 'extra': extra}, L.Dense(CLASSES)(h))


def _embedding():
  return tf.keras.Sequential([L.Input((5,), dtype=tf.int32),
                              L.Embedding(20, 4), L.GlobalAveragePooling1D(),
                              L.Dense(CLASSES)])


def _first_not_prunable():
  return tf.keras.Sequential([L.Input((6,)), L.LayerNormalization(),
                              L.Dense(8, activation='relu'), L.Dense(CLASSES)])


MODELS = {
    'sequential': UserModel(_sequential, 'vector'),
    'functional_bn': UserModel(_functional_bn, 'image'),
    'named_inputs_bn': UserModel(_named_inputs_bn, 'named'),
    'embedding': UserModel(_embedding, 'tokens'),
    'first_not_prunable': UserModel(_first_not_prunable, 'vector'),
}

OPTIMIZERS = {
    'sgdm': lambda: tff.learning.optimizers.build_sgdm(0.05, momentum=0.9),
    'adam': lambda: tff.learning.optimizers.build_adam(0.01),
}

# How the user hands over client data. 'dict_features' is Keras's
# `(features dict, label)` for a model with named inputs; a plain dict's keys
# must be in sorted order for TFF (test_structures.py checks the refusal).
STRUCTURES = ('tuple', 'odict', 'dict_features', 'client_data')


def _features(kind: str, y: np.ndarray, rng) -> Any:
  n = len(y)
  if kind == 'vector':
    return (rng.normal(size=(n, 6)) + y[:, None]).astype(np.float32)
  if kind == 'image':
    return (rng.normal(size=(n, 4, 4, 1)) + y[:, None, None, None]).astype(
        np.float32)
  if kind == 'tokens':
    return (rng.integers(0, 6, (n, 5)) + 6 * y[:, None]).astype(np.int32)
  return {'extra': _features('vector', y, rng)[:, :2],  # Keys in sorted
          'pixels': _features('image', y, rng)}        # order: see below.


def _arrays(features: str, seed: int):
  rng = np.random.default_rng(seed)
  out = []
  for c in range(NUM_CLIENTS):
    y = rng.integers(0, CLASSES, EXAMPLES).astype(np.int32)
    y[:2] = c % CLASSES  # Non-IID enough to differ per client.
    out.append((_features(features, y, rng), y))
  return out


def client_datasets(structure: str, model: UserModel, seed: int = 0
                    ) -> list[tf.data.Dataset]:
  """Each client's batched training data, in the user's structure."""
  arrays = _arrays(model.features, seed)
  if structure == 'client_data':
    return _from_client_data(arrays)
  out = []
  for x, y in arrays:
    if structure == 'odict':
      element = collections.OrderedDict(x=x, y=y)
    else:  # 'tuple', and 'dict_features' whose x is already a dict.
      element = (dict(x) if isinstance(x, dict) else x, y)
    out.append(tf.data.Dataset.from_tensor_slices(element).batch(BATCH))
  return out


def _from_client_data(arrays) -> list[tf.data.Dataset]:
  """A `tff.simulation.datasets.ClientData` built by the user from a TF
  function of the client id, then batched per client."""
  xs = tf.constant(np.stack([x for x, _ in arrays]))
  ys = tf.constant(np.stack([y for _, y in arrays]))

  def dataset_fn(client_id):
    i = tf.strings.to_number(client_id, tf.int32)
    return tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(x=tf.gather(xs, i), y=tf.gather(ys, i)))

  client_data = tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
      [str(i) for i in range(len(arrays))], dataset_fn)
  return [client_data.create_tf_dataset_for_client(c).batch(BATCH)
          for c in client_data.client_ids]


def loss_fn():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def metrics_fn():
  return [tf.keras.metrics.SparseCategoricalAccuracy()]


@dataclasses.dataclass(frozen=True)
class Ecosystem:
  """One user's setup: data structure, model, client optimizer."""
  structure: str
  model: str
  optimizer: str

  @property
  def id(self) -> str:
    return f'{self.structure}-{self.model}-{self.optimizer}'


def compatible(structure: str, model: str) -> bool:
  """Named-input models take dict features; the others, arrays."""
  return (structure == 'dict_features') == (model == 'named_inputs_bn')


ECOSYSTEMS = [Ecosystem(s, m, o) for s in STRUCTURES for m in MODELS
              for o in OPTIMIZERS if compatible(s, m)]


def default_ecosystem(index: int) -> Ecosystem:
  """The setup of the `index`-th default case: a rotation through every
  structure, model and optimizer, starting from Keras's `(x, y)` tuples and a
  Sequential model (what a new TFF user writes first)."""
  rotation = [Ecosystem('tuple', 'sequential', 'sgdm'),
              Ecosystem('odict', 'functional_bn', 'adam'),
              Ecosystem('dict_features', 'named_inputs_bn', 'sgdm'),
              Ecosystem('client_data', 'embedding', 'adam'),
              Ecosystem('tuple', 'first_not_prunable', 'adam'),
              Ecosystem('tuple', 'functional_bn', 'sgdm'),
              Ecosystem('client_data', 'sequential', 'sgdm'),
              Ecosystem('odict', 'embedding', 'sgdm')]
  return rotation[index % len(rotation)]


def _builder_key(algorithm: str):
  config = registry.ALGORITHMS[algorithm]
  return config.builder, tuple(sorted(config.builder_args.items()))


# Refusals at build time, with what the message names (a model the method
# cannot take): the full matrix expects them; the default rotation avoids them.
REFUSED = {('sparsyfed', 'embedding'): 'Dense and Conv2D'}


def refusal(algorithm: str, eco: Ecosystem) -> str | None:
  return REFUSED.get((algorithm, eco.model))


def default_cases():
  """(algorithm, variant, ecosystem) of the default suite: every algorithm's
  base case, and every variant once per builder (algorithms that share a
  builder and its fixed arguments share their client and server paths), in a
  rotation of user setups that starts from Keras's `(x, y)` tuples and a
  Sequential model (what a new TFF user writes first)."""
  chosen, keys = [], set()
  for a, v in algorithm_cases():
    if v == 'base' or (v not in _SLOW_VARIANTS and
                       (_builder_key(a), v) not in keys):
      chosen.append((a, v))
      keys.add((_builder_key(a), v))
  cases, i = [], 0
  for a, v in chosen:
    eco = default_ecosystem(i)
    while refusal(a, eco):
      i += 1
      eco = default_ecosystem(i)
    cases.append((a, v, eco))
    i += 1
  return cases


def full_cases():
  """Every algorithm case on every user setup (`-m slow`)."""
  return [(a, v, e) for a, v in algorithm_cases() for e in ECOSYSTEMS]


# Building and inspecting.
@dataclasses.dataclass
class Built:
  """A case's process, its parts (captured as they were composed), its
  clients' data and the layout of its masked kernels."""
  hparams: dict[str, Any]
  process: Any
  parts: tuple  # compose_learning_process's arguments, in order.
  data: list  # What `process.next` takes for the clients.
  plain_data: list[tf.data.Dataset]
  layout: layout_lib.ModelLayout
  model_fn: Callable[[], tf.keras.Model]


def build(algorithm: str, variant: str, eco: Ecosystem, monkeypatch) -> Built:
  hp = hparams(algorithm, variant)
  model = MODELS[eco.model]
  data = client_datasets(eco.structure, model)
  captured = []
  compose = tff.learning.templates.compose_learning_process

  def capturing(*args, **kwargs):
    captured.append(args + tuple(kwargs.values()))
    return compose(*args, **kwargs)

  monkeypatch.setattr(tff.learning.templates, 'compose_learning_process',
                      capturing)
  process = registry.build(
      hp, model.build, loss_fn=loss_fn, input_spec=data[0].element_spec,
      metrics_fn=metrics_fn, seed=0, initial_client_data=data[0],
      client_optimizer_fn=OPTIMIZERS[eco.optimizer]())
  monkeypatch.undo()
  assert len(captured) == 1, 'the process was not composed once'
  wrapped = models_lib.make_prunable(model.build(), log=False)
  layout = layout_lib.build_layout(wrapped, hp['sparsity'],
                                   hp['sparsity_distribution'] or 'erk')
  process_data = data
  if hp['client_density_budgets']:
    densities = [float(p.split(':')[0])
                 for p in hp['client_density_budgets'].split(',')]
    process_data = [collections.OrderedDict(
        data=d, budget=hooks.budget_dataset(
            densities[i % len(densities)])) for i, d in enumerate(data)]
  return Built(hp, process, captured[0], process_data, data, layout,
               model.build)


def shard(cases, index: int, count: int = 3):
  return cases[index::count]


def case_id(value) -> str:
  return value.id if isinstance(value, Ecosystem) else str(value)
