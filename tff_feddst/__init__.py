"""Federated Dynamic Sparse Training in TensorFlow Federated."""
