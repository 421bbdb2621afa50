"""The hook protocol: where a method's client-side rules meet the masked-training core.

`templates.client_work` writes the client's round once: decode the payload,
E epochs of SGD re-masked after every step, encode and count the upload. A
method adds what differs in one `ClientHook` (one module under
`templates/hooks/`), and its builder passes the hook in. tff.learning keeps
`model_delta_client_work` and `proximal_client_work` apart by copying the
whole training loop; here the loop is written once and the hooks are called
at fixed points of it, in the order the builder lists them:

  server, before the round:  schedule(round_num) -> (rate, active)
  client, building:          gradient_memory(trainer)
  client, data:              split_data(data, round)     (type: data_type)
  client, after decoding:    after_decode(trainer, round)
  client, before each batch: before_batch(...)           (has_epoch_events)
  client, after training:    after_training(trainer, round)
  client, upload:            upload(trainer, round, payload)
  client, statistics:        client_stats(trainer, round, stats)
  server, measurements:      round_measurements(stats, clients, layout)

Every method does nothing by default, so a hook overrides only its points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any, Protocol

import tensorflow as tf


class GradientMemory(Protocol):
  """Gradients a hook keeps through the local steps, in the loop's state.

  The core calls `remember` with the dense loss gradients of the trainables
  at `indices` on every step (before the regularizer and the optimizer);
  the hook reads the final state back from `ClientRound.memory_state`.
  """
  indices: Sequence[int]

  def initial(self) -> Any:
    ...

  def remember(self, state, grads) -> Any:
    ...


@dataclasses.dataclass
class ClientRound:
  """What one client's round knows while it is traced; hooks read and fill it.

  Attributes:
    rate: float32 scalar from the schedule (FedDST's α_r, FLASH's p_0).
    active: bool scalar from the schedule: whether clients move their masks
      (or, for PruneFL, whether the server reconfigures) this round.
    received_masks: the masks the payload carried.
    start_masks: the masks training starts from (a budget's sub-masks);
      the client FLOPs are counted on them.
    layer_limits: int32 per-layer live counts a client must not exceed (a
      density budget), or None.
    client_input: a per-client value carried in the data (a budget), or None.
    memory_state: the gradient memory's state after training, or ().
  """
  rate: Any
  active: Any
  received_masks: list[Any] = dataclasses.field(default_factory=list)
  start_masks: list[Any] = dataclasses.field(default_factory=list)
  layer_limits: list[Any] | None = None
  client_input: Any = None
  memory_state: Any = ()


class ClientHook:
  """One method's client-side behaviour (see the module docstring).

  `trainer` is the core's `client_work.MaskedTrainer`: its `kernel_vars`,
  `mask_vars`, `trainable`, `layout`, `epochs`, `memory` and `set_masks`.
  """

  # Whether this method changes per-layer live counts or the received mask
  # from round to round, so that no kernel can skip the per-step re-mask.
  remask_all_kernels: bool = False

  def schedule(self, round_num) -> tuple[Any, Any] | None:
    """(float32 rate, bool active) of round `round_num` (server side); None:
    this hook has no schedule. At most one hook of a client work has one."""
    del round_num
    return None

  def gradient_memory(self, trainer) -> GradientMemory | None:
    """The gradients to keep through the local steps; None: none. At most one
    hook of a client work keeps any."""
    del trainer
    return None

  def data_type(self, data_type):
    """The client data's TFF type, given the batches' `B*`."""
    return data_type

  def split_data(self, data, client_round: ClientRound):
    """The batches of the client data (of `data_type`); a hook may keep the
    rest in `client_round`."""
    del client_round
    return data

  def after_decode(self, trainer, client_round: ClientRound) -> None:
    """After the payload set the model's variables, before training."""

  def has_epoch_events(self, epochs: int) -> bool:
    """Whether `before_batch` must run (the loop then tags each batch with
    its epoch and reads the masks anew every step)."""
    del epochs
    return False

  def initial_event_state(self) -> Any:
    return ()

  def before_batch(self, trainer, client_round: ClientRound, epoch,
                   event_state, memory_state) -> Any:
    """Before each training step; `epoch` is the batch's 0-based epoch.
    Returns the next `event_state`."""
    del trainer, client_round, epoch, memory_state
    return event_state

  def after_training(self, trainer, client_round: ClientRound) -> None:
    """After the E epochs, before the upload is encoded."""

  def upload(self, trainer, client_round: ClientRound, payload):
    """The upload, given the encoded sparse payload."""
    del trainer, client_round
    return payload

  def client_stats(self, trainer, client_round: ClientRound,
                   stats: Mapping[str, Any]) -> Mapping[str, Any]:
    """Statistics to add to the client's (summed over clients)."""
    del trainer, client_round, stats
    return {}

  def round_measurements(self, stats: Mapping[str, Any], clients,
                         layout) -> Mapping[str, Any]:
    """Measurements to add, from the summed statistics (server side);
    `clients` is float64, at least 1."""
    del stats, clients, layout
    return {}


def no_schedule() -> tuple[tf.Tensor, tf.Tensor]:
  """The schedule of a client work whose hooks have none: rate 0, inactive."""
  return tf.constant(0.0), tf.constant(False)
