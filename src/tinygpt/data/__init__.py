"""Chapter 2 data pipeline: sliding-window datasets and a NumPy DataLoader (int64 batches).

Imports only numpy, tiktoken and tinygpt.tokenizer/tinygpt.assets, never the Tensor engine: batches are
plain ndarrays that the model code turns into Tensors.
"""
from tinygpt.data.datasets import GPTDatasetV1
from tinygpt.data.loader import DataLoader, create_dataloader_v1, default_collate

__all__ = ["DataLoader", "GPTDatasetV1", "create_dataloader_v1", "default_collate"]
