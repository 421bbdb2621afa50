"""The wire format: bit packing, payload round trips, byte counts."""

import numpy as np
import pytest
import tensorflow as tf

from tff_feddst.sparse import codec


@pytest.mark.parametrize('size', [1, 7, 8, 9, 250, 1001])
def test_pack_unpack_round_trip_and_bit_order(size):
  rng = np.random.default_rng(size)
  mask = rng.random(size) < 0.3
  packed = codec.pack_bits(mask.astype(np.float32)).numpy()
  assert packed.dtype == np.uint8 and packed.size == -(-size // 8)
  # Most significant bit first, zero padding: numpy's own packbits.
  np.testing.assert_array_equal(packed, np.packbits(mask))
  np.testing.assert_array_equal(codec.unpack_bits(packed, size).numpy(), mask)


def test_first_weight_is_the_top_bit():
  mask = np.zeros(10, np.float32)
  mask[0] = mask[9] = 1
  np.testing.assert_array_equal(codec.pack_bits(mask).numpy(), [128, 64])


@pytest.mark.parametrize('shape', [(5, 5, 1, 10), (3, 7), (250,)])
@pytest.mark.parametrize('send_masks', [True, False])
def test_encode_decode_round_trip_and_bytes(shape, send_masks):
  rng = np.random.default_rng(0)
  mask = (rng.random(shape) < 0.25).astype(np.float32)
  kernel = (rng.normal(size=shape) * mask).astype(np.float32)
  dense = [rng.normal(size=(4,)).astype(np.float32)]
  payload = codec.encode([kernel], [mask], dense, send_masks=send_masks)
  assert isinstance(payload, codec.SparsePayload)
  values = payload.values[0].numpy()
  np.testing.assert_array_equal(values, kernel[mask > 0])
  if send_masks:
    decoded = codec.decode_mask(payload.masks[0], shape).numpy()
    np.testing.assert_array_equal(decoded, mask)
    np.testing.assert_array_equal(
        codec.scatter_values(payload.values[0], decoded).numpy(), kernel)
  else:
    assert payload.masks[0].shape == (0,)
  serialized = sum(np.asarray(t).nbytes for t in tf.nest.flatten(payload))
  want = 4 * int(mask.sum()) + 16 + (-(-mask.size // 8) if send_masks else 0)
  assert int(codec.payload_bytes(payload)) == serialized == want


def test_unknown_upload_dtype_is_named():
  with pytest.raises(ValueError, match='upload_dtype'):
    codec.upload_dtype('float64')
