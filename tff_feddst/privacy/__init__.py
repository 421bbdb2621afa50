"""DP-FedAvg (McMahan et al., ICLR 2018) on sparse uploads with a fixed mask.

`accounting` (ε with dp_accounting; no TensorFlow) is imported on its own by
the training program; the TFF pieces (`delta_client_work`, `aggregator`,
`finalizer`, on the wire format `sparse.flat_update`) are composed by
`algorithms.feddst`.
"""
