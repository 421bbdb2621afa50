"""The setup every sparse builder shares, from the initial model to the parts.

A builder reads top to bottom, as tff.learning's `build_weighted_fed_avg`:
the registry checks its options (`registry.check_builder_args`), the builder
checks what no option rule can, makes its initial weights (`prunable_model`
and its own masking rule), and hands them with its client hooks, aggregator
and finalizer to `build_components` (what every builder passes the same way,
from its own arguments, comes from `builder_parts`): the initial weights
computation, the types, the sparse distributor, the masked client work and
the aggregator come from there, each replaceable by the caller's
(`model_distributor`, `model_aggregator`, `metrics_aggregator`, as
tff.learning's builders take them).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
import inspect
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_feddst import models as models_lib
from tff_feddst import runtime
from tff_feddst.sparse import codec
from tff_feddst.sparse import layout as layout_lib
from tff_feddst.sparsity import budgets as budgets_lib
from tff_feddst.templates import client_work as client_work_lib
from tff_feddst.templates import distributor as distributor_lib
from tff_feddst.templates import hooks as hooks_lib

OptimizerArg = (tff.learning.optimizers.Optimizer |
                Callable[[], tff.learning.optimizers.Optimizer])


class Components(NamedTuple):
  """The parts a builder composes (for tests and custom loops)."""
  layout: layout_lib.ModelLayout
  initial_model_weights_fn: tff.Computation
  distributor: tff.learning.templates.DistributionProcess
  client_work: tff.learning.templates.ClientWorkProcess
  aggregator: tff.templates.AggregationProcess
  finalizer: tff.learning.templates.FinalizerProcess


def bind_arguments(builder: Callable[..., Any], components_name: str,
                   model_fn, kwargs: Mapping[str, Any]) -> dict[str, Any]:
  """`builder`'s arguments (defaults filled in) for its `*_components`
  twin, which takes exactly them; an unknown or missing one is named."""
  try:
    bound = inspect.signature(builder).bind(model_fn, **kwargs)
  except TypeError as e:
    raise TypeError(f'{components_name} takes the arguments of '
                    f'{builder.__name__}: {e}') from None
  bound.apply_defaults()
  return dict(bound.arguments)


def _optimizer(arg: OptimizerArg | None, name: str):
  if arg is None or isinstance(arg, tff.learning.optimizers.Optimizer):
    return arg
  if callable(arg):
    opt = arg()
    if isinstance(opt, tff.learning.optimizers.Optimizer):
      return opt
  raise TypeError(
      f'{name} must be a tff.learning.optimizers.Optimizer (e.g. '
      f'tff.learning.optimizers.build_sgdm(0.01, momentum=0.9)) or a no-arg '
      f'callable returning one; got {arg!r}. Keras optimizers are not supported.')


def checked_optimizers(*, client_optimizer_fn, server_optimizer_fn, loss_fn):
  """(client optimizer, server optimizer or None), after checking them and
  the loss; then owns TFF's default context (our worker, not TFF's, which
  outlives Python). Every sparse builder's last check before it builds."""
  client_optimizer = _optimizer(client_optimizer_fn, 'client_optimizer_fn')
  if client_optimizer is None:
    raise TypeError('client_optimizer_fn is required.')
  server_optimizer = _optimizer(server_optimizer_fn, 'server_optimizer_fn')
  models_lib.loss_instance(loss_fn)  # Fail early on a bad loss.
  runtime.own_default_context()
  return client_optimizer, server_optimizer


def _unordered_dicts(spec, path='input_spec'):
  """(path, keys) of the plain dicts in `spec` whose keys are not in sorted
  order."""
  if isinstance(spec, dict):
    found = ([(path, list(spec))]
             if not isinstance(spec, collections.OrderedDict) and
             list(spec) != sorted(spec) else [])
    for key, value in spec.items():
      found += _unordered_dicts(value, f'{path}[{key!r}]')
    return found
  if isinstance(spec, (tuple, list)):
    return [p for i, v in enumerate(spec)
            for p in _unordered_dicts(v, f'{path}[{i}]')]
  return []


def check_input_spec(input_spec, model: tf.keras.Model):
  """Fails early on client data TFF cannot take, which would otherwise
  surface deep inside TFF's tracing or at the first `next`: an unbatched
  spec (a client dataset's element_spec taken before `.batch`), or a plain
  dict whose keys are out of sorted order (TFF refuses to serialize such a
  dataset: `tf.nest` orders a dict's values by sorted key)."""
  unordered = _unordered_dicts(input_spec)
  if unordered:
    path, keys = unordered[0]
    raise ValueError(
        f'{path} is a dict with keys {keys} out of sorted order, which TFF '
        'cannot serialize as client data. Build the dataset elements with collections.OrderedDict, or a dict '
        'whose keys are in sorted order.')
  x_spec = (input_spec['x'] if isinstance(input_spec, dict) else
            input_spec[0] if isinstance(input_spec, (tuple, list)) else None)
  try:
    model_rank = len(model.input_shape)
  except (AttributeError, TypeError):  # Several inputs or no input shape.
    return
  if not isinstance(x_spec, tf.TensorSpec) or x_spec.shape.rank is None:
    return
  if x_spec.shape.rank == model_rank - 1:
    raise ValueError(
        f'input_spec looks unbatched: x has shape {x_spec.shape} but the '
        f'model takes {model.input_shape} (batch dimension first). Pass the '
        'spec of the batched client datasets, e.g. '
        '`tff_feddst.program.batch_input_spec(data, batch_size)` or '
        '`dataset.batch(b).element_spec`.')


def prunable_model(model_fn, input_spec, *, seed, initial_weights,
                   transform: Callable[[tf.keras.Model], tf.keras.Model] |
                   None = None) -> tuple[tf.keras.Model, tf.keras.Model]:
  """(plain, TF-MOT-wrapped) initial model, built eagerly once: seeded init
  or `initial_weights`, `transform` (SparsyFed's re-parameterisation) before
  wrapping; the input spec checked against it."""
  if seed is not None:
    tf.keras.utils.set_random_seed(seed)
  plain = model_fn()
  if initial_weights is not None:
    models_lib.copy_weights(plain, initial_weights)
  wrapped = models_lib.make_prunable(transform(plain) if transform else plain)
  check_input_spec(input_spec, wrapped)
  return plain, wrapped


def learning_model(plain: tf.keras.Model, wrapped: tf.keras.Model, *, loss_fn,
                   input_spec, metrics_fn=None) -> tff.learning.models.VariableModel:
  """The tff.learning model clients train through.

  TF-MOT wraps the user's layers themselves, so the plain model shares every
  variable with the wrapped one. Clients train through the plain model: the
  masks stay in TF-MOT's variables and are applied after every step, which
  makes the wrapper's own per-forward `kernel * mask` copy redundant (it cost
  ~10% of the round time).
  """
  same = ([v.ref() for v in plain.trainable_weights] ==
          [v.ref() for v in wrapped.trainable_weights])
  return tff.learning.models.from_keras_model(
      plain if same else wrapped, loss=models_lib.loss_instance(loss_fn),
      input_spec=input_spec, metrics=metrics_fn() if metrics_fn else None)


def training_models_fn(model_fn, *, loss_fn, input_spec, metrics_fn):
  """The client work's `models_fn`: (TF-MOT-wrapped Keras model, tff model)."""
  def models_fn():
    plain = model_fn()
    wrapped = models_lib.make_prunable(plain, log=False)
    return wrapped, learning_model(plain, wrapped, loss_fn=loss_fn,
                                   input_spec=input_spec,
                                   metrics_fn=metrics_fn)

  return models_fn


def weight_arrays(model: tf.keras.Model) -> tuple[list[np.ndarray],
                                                  list[np.ndarray]]:
  """(trainable, non-trainable) arrays of a model, in its variable order."""
  return ([v.numpy() for v in model.trainable_weights],
          [v.numpy() for v in model.non_trainable_weights])


def budget_hooks(value) -> tuple[hooks_lib.ClientHook, ...]:
  """The client hooks of per-client density budgets (text or pairs, checked
  by the registry; None: no hook)."""
  if value is None:
    return ()
  return (hooks_lib.DensityBudgets(tuple(
      b.density for b in budgets_lib.parse(value))),)


def check_norm_bound(client_norm_bound: float) -> None:
  """Every sparse builder's own argument, which no registry option holds."""
  if not client_norm_bound > 0:
    raise ValueError(f'client_norm_bound must be > 0, got '
                     f'{client_norm_bound!r}.')


def _refuse_other_type(name: str, what: str, expected, got) -> None:
  if not expected.is_equivalent_to(got):
    raise TypeError(f'{name} must produce {what} of type {expected}; got '
                    f'{got}.')


def builder_parts(a: Mapping[str, Any], *, models_fn: Callable | None = None,
                  prox_mu: float = 0.0) -> dict[str, Any]:
  """The `build_components` arguments a builder takes straight from its own
  bound arguments `a` (`bind_arguments`): the clients' models (`models_fn`,
  default from a['model_fn']), the local training, the loop and the parts
  the caller injects."""
  if models_fn is None:
    models_fn = training_models_fn(
        a['model_fn'], loss_fn=a['loss_fn'], input_spec=a['input_spec'],
        metrics_fn=a['metrics_fn'])
  return dict(
      models_fn=models_fn, input_spec=a['input_spec'],
      training=client_work_lib.LocalTrainingConfig(
          epochs=a['client_epochs'], weight_decay=a['client_weight_decay'],
          prox_mu=prox_mu, upload_dtype=codec.upload_dtype(a['upload_dtype']),
          jit_compile=bool(a['client_jit_compile'])),
      loop_implementation=a['loop_implementation'],
      model_distributor=a['model_distributor'],
      model_aggregator=a['model_aggregator'],
      metrics_aggregator=a['metrics_aggregator'])


def build_components(
    layout: layout_lib.ModelLayout, trainable, non_trainable, *,
    models_fn: Callable, input_spec,
    client_optimizer: tff.learning.optimizers.Optimizer,
    training: client_work_lib.LocalTrainingConfig,
    hooks: Sequence[hooks_lib.ClientHook],
    aggregator_factory: tff.aggregators.WeightedAggregationFactory,
    build_finalizer: Callable[[Any, Any], Any],
    loop_implementation: tff.learning.LoopImplementation,
    always_dense=None, initial_bytes: tuple[int, int] = (0, 0),
    adapt_client_work: Callable | None = None,
    model_distributor: tff.learning.templates.DistributionProcess | None = None,
    model_aggregator: tff.aggregators.WeightedAggregationFactory | None = None,
    metrics_aggregator: Callable | None = None) -> Components:
  """The parts of a sparse process starting from these initial weights.

  Args:
    layout, trainable, non_trainable: the initial model (arrays).
    models_fn, input_spec, client_optimizer, training, hooks,
      loop_implementation, always_dense, initial_bytes: the masked client
      work's (`templates.client_work.build_masked_client_work`).
    aggregator_factory: the method's aggregator of the client results.
    build_finalizer: (weights type, aggregate type) -> its finalizer.
    adapt_client_work: optional wrapper of the masked client work (DP's
      delta upload).
    model_distributor: replaces the sparse distributor; it must send the
      same payload (`sparse.SparsePayload`), which the clients decode.
    model_aggregator: replaces `aggregator_factory`; it must produce the
      aggregate the finalizer reads (the default's type).
    metrics_aggregator: aggregates the clients' training metrics, as in
      tff.learning (default: `sum_then_finalize`).
  """
  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights(
        [tf.constant(w) for w in trainable],
        [tf.constant(w) for w in non_trainable])

  weights_type = initial_model_weights_fn.type_signature.result
  distributor = distributor_lib.build_sparse_distributor(layout, weights_type)
  payload_type = distributor.next.type_signature.result.result.member
  if model_distributor is not None:
    _refuse_other_type('model_distributor', 'the sparse payload',
                       payload_type, model_distributor.next.type_signature
                       .result.result.member)
    distributor = model_distributor
  client_work = client_work_lib.build_masked_client_work(
      models_fn, layout, payload_type,
      tff.SequenceType(tff.types.tensorflow_to_type(input_spec)),
      optimizer=client_optimizer, training=training, hooks=hooks,
      loop_implementation=loop_implementation, always_dense=always_dense,
      initial_bytes=initial_bytes, metrics_aggregator=metrics_aggregator)
  if adapt_client_work is not None:
    client_work = adapt_client_work(client_work)
  result_type = client_work.next.type_signature.result.result.member
  aggregator = aggregator_factory.create(result_type.update,
                                         result_type.update_weight)
  if model_aggregator is not None:
    injected = model_aggregator.create(result_type.update,
                                       result_type.update_weight)
    _refuse_other_type('model_aggregator', 'the aggregate the finalizer reads',
                       aggregator.next.type_signature.result.result.member,
                       injected.next.type_signature.result.result.member)
    aggregator = injected
  finalizer = build_finalizer(
      weights_type, aggregator.next.type_signature.result.result.member)
  return Components(layout, initial_model_weights_fn, distributor,
                    client_work, aggregator, finalizer)
