"""Injected parts, as tff.learning's builders take them: a distributor that
sends the sparse payload and TFF's own metrics aggregator are taken and give
the default's round; parts of another type are refused, naming the type."""

import numpy as np
import pytest
import tensorflow_federated as tff

from test_feddst_execution import DATA, common, model_fn
from tff_feddst import algorithms


def kwargs(**overrides):
  return common(sparsity=0.5, readjustment_ratio=0.2,
                rounds_between_readjustments=1, readjustment_end_round=4,
                client_epochs=1, **overrides)


def one_round(parts):
  process = tff.learning.templates.compose_learning_process(
      parts.initial_model_weights_fn, parts.distributor, parts.client_work,
      parts.aggregator, parts.finalizer)
  out = process.next(process.initialize(), DATA[:2])
  return out.metrics, process.get_model_weights(out.state)


def test_equivalent_injected_parts_give_the_default_round():
  default = algorithms.build_feddst_components(model_fn, **kwargs())
  injected = algorithms.build_feddst_components(model_fn, **kwargs(
      model_distributor=default.distributor,
      metrics_aggregator=tff.learning.metrics.sum_then_finalize))
  assert injected.distributor is default.distributor
  want_metrics, want_weights = one_round(default)
  got_metrics, got_weights = one_round(injected)
  assert (got_metrics['client_work']['train'] ==
          want_metrics['client_work']['train'])
  assert (got_metrics['client_work']['round'] ==
          want_metrics['client_work']['round'])
  for got, want in zip(got_weights.trainable, want_weights.trainable):
    np.testing.assert_array_equal(got, want)


def test_parts_of_another_type_are_refused_naming_the_type():
  parts = algorithms.build_feddst_components(model_fn, **kwargs())
  broadcast = tff.learning.templates.build_broadcast_process(
      parts.initial_model_weights_fn.type_signature.result)
  with pytest.raises(TypeError, match='model_distributor must produce the '
                     'sparse payload of type'):
    algorithms.build_feddst_components(model_fn, **kwargs(
        model_distributor=broadcast))
  with pytest.raises(ValueError, match='model_aggregator cannot be used with '
                     'dp_noise_multiplier'):
    algorithms.build_feddst_components(model_fn, **common(
        sparsity=0.5, readjustment_ratio=0.0, dp_noise_multiplier=0.5,
        dp_clip_norm=1.0, dp_clients_per_round=2,
        model_aggregator=tff.aggregators.MeanFactory()))
