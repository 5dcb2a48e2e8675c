"""The engine: Tensor, autograd, dtypes, the random generator and reused storage."""
