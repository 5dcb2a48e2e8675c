"""The book's model code: attention (chapter 3), GPTModel (chapter 4) and text generation
(sections 4.7 and 5.3), on tinygpt tensors."""
from .attention import (CausalAttention, KVCacheError, LayerKVCache, MultiHeadAttention,
                        MultiHeadAttentionWrapper, SelfAttention_v1, SelfAttention_v2)
from .fast_attention import FastMultiHeadAttention
from .config import GPT_CONFIG_124M, gpt2_config, model_configs, validate_config
from .generate import generate, generate_stream, generate_text_simple, text_to_token_ids, token_ids_to_text
from .inference import for_inference, for_training
from .batched import BatchedKVCache, generate_batched
from .gemma3 import (GEMMA3_CONFIG_1B, GEMMA3_CONFIG_270M, GEMMA3_CONFIG_4B, GEMMA3_CONFIGS,
                     SlidingWindowKVCache, Gemma3Model, SlidingLayerKVCache, sliding_window_attention)
from .olmo3 import OLMO3_CONFIG_7B, OLMO3_CONFIGS, Olmo3Model
from .moe import QWEN3_MOE_CONFIG_30B_A3B, MoEFeedForward, Qwen3MoeModel
from .gpt import (GELU, FeedForward, GPTModel, KVCache, LayerNorm, TransformerBlock,
                  count_parameters, model_size_mb)
from .llama3 import LLAMA32_CONFIG_1B, LLAMA32_CONFIG_3B, LLAMA32_CONFIGS, Llama3Model
from .modern import GroupedQueryAttention, RMSNorm, RotaryModel
from .qwen3 import (QWEN3_CONFIG_0_6B, QWEN3_CONFIG_1_7B, QWEN3_CONFIG_4B, QWEN3_CONFIG_8B,
                    QWEN3_CONFIGS, Qwen3Model)

__all__ = ["CausalAttention", "KVCacheError", "LayerKVCache", "MultiHeadAttention",
           "FastMultiHeadAttention", "MultiHeadAttentionWrapper", "for_inference", "for_training",
           "BatchedKVCache", "generate_batched",
           "SelfAttention_v1", "SelfAttention_v2", "GPT_CONFIG_124M", "gpt2_config",
           "model_configs", "validate_config", "generate", "generate_stream", "generate_text_simple",
           "text_to_token_ids", "token_ids_to_text", "GELU", "LayerNorm", "FeedForward",
           "GPTModel", "KVCache", "TransformerBlock", "count_parameters", "model_size_mb",
           "LLAMA32_CONFIG_1B", "LLAMA32_CONFIG_3B", "LLAMA32_CONFIGS", "Llama3Model",
           "GroupedQueryAttention", "RMSNorm", "RotaryModel", "QWEN3_CONFIG_0_6B",
           "QWEN3_CONFIG_1_7B", "QWEN3_CONFIG_4B", "QWEN3_CONFIG_8B", "QWEN3_CONFIGS", "Qwen3Model",
           "GEMMA3_CONFIG_270M", "GEMMA3_CONFIG_1B", "GEMMA3_CONFIG_4B", "GEMMA3_CONFIGS",
           "SlidingWindowKVCache", "Gemma3Model", "SlidingLayerKVCache", "sliding_window_attention",
           "OLMO3_CONFIG_7B", "OLMO3_CONFIGS", "Olmo3Model",
           "QWEN3_MOE_CONFIG_30B_A3B", "MoEFeedForward", "Qwen3MoeModel"]
