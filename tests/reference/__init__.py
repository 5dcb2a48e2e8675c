"""Independent reference implementations used only by the tests and benchmarks (they may import
torch; tinygpt never does). `torch_gpt` is the PyTorch twin of the book's chapter 3-4 modules."""
