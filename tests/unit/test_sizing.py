"""Model sizes from the architecture, checked against published checkpoints (docs/sizing.md)."""

from __future__ import annotations

import pytest

from toolkit.hardware import model_catalog
from toolkit.sizing import gguf_type, tensors

# (catalog model, quantisation, published size in GB (1e9 bytes), where it is published)
PUBLISHED = [
    ("llama-3.1-8b", "AWQ", 4.68 + 1.05,
     "https://huggingface.co/hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4/tree/main"),
    ("qwen2.5-7b", "AWQ", 4.00 + 1.57,
     "https://huggingface.co/Qwen/Qwen2.5-7B-Instruct-AWQ/tree/main"),
    ("qwen2.5-14b", "AWQ", 3.99 + 3.97 + 2.02,
     "https://huggingface.co/Qwen/Qwen2.5-14B-Instruct-AWQ/tree/main"),
    ("qwen2.5-32b", "AWQ", 3.94 + 3.98 + 3.95 + 3.98 + 3.48,
     "https://huggingface.co/Qwen/Qwen2.5-32B-Instruct-AWQ/tree/main"),
    ("qwen2.5-14b", "GPTQ", 3.99 + 3.97 + 2.02,
     "https://huggingface.co/Qwen/Qwen2.5-14B-Instruct-GPTQ-Int4/tree/430ce095d33cf3a9f18e4211099f9f8a3396ae05"),
    ("llama-3.1-8b", "Q4_K_M", 4.92,
     "https://huggingface.co/bartowski/Meta-Llama-3.1-8B-Instruct-GGUF/tree/36f4a587c7a442d602f3a40df45aba4449bb9898"),
    ("llama-3.1-8b", "Q8_0", 8.54,
     "https://huggingface.co/bartowski/Meta-Llama-3.1-8B-Instruct-GGUF/tree/36f4a587c7a442d602f3a40df45aba4449bb9898"),
    ("llama-3.1-8b", "F16", 16.1,  # the bf16 file: same 2 bytes per weight
     "https://huggingface.co/bartowski/Meta-Llama-3.1-8B-Instruct-GGUF/tree/36f4a587c7a442d602f3a40df45aba4449bb9898"),
    ("mistral-7b", "Q4_K_M", 4.37,
     "https://huggingface.co/lmstudio-community/Mistral-7B-Instruct-v0.3-GGUF/tree/29a785419661afc70b5cd91b5023a835b0092281"),
    ("mistral-7b", "Q8_0", 7.70,
     "https://huggingface.co/lmstudio-community/Mistral-7B-Instruct-v0.3-GGUF/tree/29a785419661afc70b5cd91b5023a835b0092281"),
    ("qwen2.5-32b", "Q4_K_M", 19.9,
     "https://huggingface.co/bartowski/Qwen2.5-32B-Instruct-GGUF/blob/b18e958915bd98cb4065d77722e7ab0668ae0caf/Qwen2.5-32B-Instruct-Q4_K_M.gguf"),
    ("qwen2.5-32b", "Q8_0", 34.8,
     "https://huggingface.co/mradermacher/Qwen2.5-32B-Instruct-GGUF/tree/4f05b79aa5572108da6b87137a776b82e486bdd9"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "quant", "published_gb", "source"), PUBLISHED)
def test_estimate_is_within_5_percent_of_the_published_checkpoint(
    key: str, quant: str, published_gb: float, source: str
) -> None:
    estimate = model_catalog().models[key].weights_bytes(quant) / 1e9
    assert abs(estimate - published_gb) / published_gb <= 0.05, (estimate, published_gb, source)


def test_the_table_covers_awq_gptq_and_gguf_from_7b_to_32b() -> None:
    quants = {q for _, q, _, _ in PUBLISHED}
    assert {"AWQ", "GPTQ", "Q4_K_M", "Q8_0"} <= quants and len(PUBLISHED) >= 8
    sizes = {model_catalog().models[k].params_b for k, *_ in PUBLISHED}
    assert min(sizes) < 8 and max(sizes) > 30


def test_4bit_checkpoints_keep_embeddings_and_head_in_16_bit() -> None:
    m = model_catalog().models["llama-3.1-8b"]
    naive = m.params_b * 1e9 * 4.16 / 8  # params x 4.16 bits: what rigpivot used to say
    assert m.weights_bytes("AWQ") - naive > 1.4e9  # 2 x 128256 x 4096 fp16 = 2.1 GB


def test_q4_k_m_follows_llama_cpp_tensor_rules() -> None:
    m = model_catalog().models["llama-3.1-8b"]
    types = {t.name: gguf_type(t, "Q4_K_M", m) for t in tensors(m)}
    assert types["output.weight"] == "Q6_K"
    assert types["token_embd.weight"] == "Q4_K"  # untied: the default type
    assert types["blk.0.norm0.weight"] == "F32"
    v = [types[f"blk.{i}.attn_v.weight"] for i in range(m.layers)]
    down = [types[f"blk.{i}.ffn_down.weight"] for i in range(m.layers)]
    assert v.count("Q6_K") == down.count("Q6_K") == m.layers // 2
    assert types["blk.5.attn_q.weight"] == types["blk.5.ffn_up.weight"] == "Q4_K"
    tied = model_catalog().models["gemma-2-9b"]
    gemma = {t.name: gguf_type(t, "Q4_K_M", tied) for t in tensors(tied)}
    assert gemma["token_embd.weight"] == "Q6_K" and "output.weight" not in gemma


def test_kv_cache_of_sliding_window_layers_stops_at_the_window() -> None:
    g = model_catalog().models["gemma-2-9b"]
    per_layer_token = 2 * g.kv_heads * g.head_dim * 2
    assert g.kv_bytes(4096) == per_layer_token * g.layers * 4096
    assert g.kv_bytes(8192) == per_layer_token * (21 * 8192 + 21 * 4096)
    assert g.max_tokens(g.kv_bytes(6000)) == 6000
