"""Model sizes from the architecture: the bytes each quantisation really puts on disk and in VRAM.

A model's `config.json` figures (hidden size, intermediate size, vocabulary, tied embeddings,
layers, attention and KV heads, head dim) give every tensor's shape; the quantisation scheme
gives each tensor's storage type. docs/sizing.md explains the rules and checks them against
published checkpoints (tests/unit/test_sizing.py keeps them within 5 %).

- AWQ / GPTQ 4-bit (vLLM): the linear layers of the transformer blocks hold 4-bit weights plus,
  per group of `group_size` input rows, an fp16 scale and a packed 4-bit zero point (GPTQ also
  an int32 `g_idx` per input row); token embeddings, the LM head (unless tied), norms and
  biases stay 16-bit.
- GGUF (llama.cpp): per-tensor types as llama.cpp's quantizer picks them (src/llama-quant.cpp,
  `llama_tensor_get_type`): Q4_K_M is Q4_K except the output head (Q6_K; the token embeddings
  too when tied to it), and attn_v / ffn_down of the layers `use_more_bits` picks (about half)
  in Q6_K; a fused attn_qkv is Q5_K. 1-D tensors (norms, biases) stay F32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.hardware import ModelShape

# GGML block sizes: (weights per block, bytes per block), from ggml's type traits.
GGML_BLOCK: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q8_0": (32, 34),
    "Q4_0": (32, 18),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
}
# A k-quant whose rows do not divide into 256 falls back (llama-quant.cpp: tensor_type_fallback).
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

GGUF_QUANTS = ("F16", "Q8_0", "Q4_K_M")
HF_QUANTS = ("FP16", "BF16", "AWQ", "GPTQ")
AWQ_GROUP = 128


@dataclass(frozen=True)
class Tensor:
    """One weight tensor, by its GGUF name; `cols` is ne[0] (input features), `rows` ne[1]."""

    name: str
    cols: int
    rows: int = 1
    layer: int | None = None

    @property
    def elements(self) -> int:
        return self.cols * self.rows

    @property
    def is_matrix(self) -> bool:
        return self.rows > 1


def tensors(m: ModelShape) -> list[Tensor]:
    """Every tensor of a decoder-only transformer with these config.json figures."""
    h, hd = m.hidden_size, m.head_dim
    q_out, kv_out = m.heads * hd, m.kv_heads * hd
    out = [Tensor("token_embd.weight", h, m.vocab_size), Tensor("output_norm.weight", h)]
    if not m.tie_word_embeddings:
        out.append(Tensor("output.weight", h, m.vocab_size))
    for i in range(m.layers):
        b = f"blk.{i}."
        out += [Tensor(f"{b}norm{n}.weight", h, layer=i) for n in range(m.norms_per_layer)]
        if m.fused_qkv:
            out.append(Tensor(b + "attn_qkv.weight", h, q_out + 2 * kv_out, i))
        else:
            out += [
                Tensor(b + "attn_q.weight", h, q_out, i),
                Tensor(b + "attn_k.weight", h, kv_out, i),
                Tensor(b + "attn_v.weight", h, kv_out, i),
            ]
        if m.qkv_bias:
            out += [
                Tensor(b + "attn_q.bias", q_out, layer=i),
                Tensor(b + "attn_k.bias", kv_out, layer=i),
                Tensor(b + "attn_v.bias", kv_out, layer=i),
            ]
        out.append(Tensor(b + "attn_output.weight", q_out, h, i))
        if m.fused_qkv:  # Phi-3: gate and up in one tensor
            out.append(Tensor(b + "ffn_up.weight", h, 2 * m.intermediate_size, i))
        else:
            out += [
                Tensor(b + "ffn_gate.weight", h, m.intermediate_size, i),
                Tensor(b + "ffn_up.weight", h, m.intermediate_size, i),
            ]
        out.append(Tensor(b + "ffn_down.weight", m.intermediate_size, h, i))
    return out


def param_count(m: ModelShape) -> int:
    return sum(t.elements for t in tensors(m))


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    # llama-quant.cpp: the first and last eighth of the layers, and every third in between.
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


def gguf_type(t: Tensor, ftype: str, m: ModelShape) -> str:
    """The GGML type llama.cpp's quantizer gives tensor `t` for file type `ftype`."""
    if not t.is_matrix:
        return "F32"
    if ftype in ("F16", "BF16", "F32"):
        return ftype
    if ftype == "Q8_0":
        return "Q8_0"
    if ftype != "Q4_K_M":
        raise ValueError(f"no tensor-type rule for GGUF file type {ftype}")
    kind = t.name.rsplit(".", 2)[-2] if "." in t.name else t.name
    new = "Q4_K"
    if t.name == "output.weight" or (m.tie_word_embeddings and t.name == "token_embd.weight"):
        new = "Q6_K" if t.cols % 256 == 0 else "Q8_0"
    elif kind == "attn_qkv":
        new = "Q5_K"
    elif kind in ("attn_v", "ffn_down"):
        assert t.layer is not None
        if _use_more_bits(t.layer, m.layers):
            new = "Q6_K"
        elif kind == "attn_v" and m.layers == 80:  # LLM_TYPE_70B: attn_v gets Q5_K
            new = "Q5_K"
    block, _ = GGML_BLOCK[new]
    if t.cols % block:
        new = _FALLBACK.get(new, "F16")
        if t.cols % GGML_BLOCK[new][0]:
            new = "F16"
    return new


def ggml_bytes(t: Tensor, typ: str) -> int:
    block, size = GGML_BLOCK[typ]
    return t.rows * (t.cols // block) * size


def _is_block_linear(t: Tensor) -> bool:
    return t.layer is not None and t.is_matrix


def hf_bytes(t: Tensor, quant: str, group: int = AWQ_GROUP) -> int:
    """Bytes of tensor `t` in a Hugging Face checkpoint at `quant` (FP16, BF16, AWQ, GPTQ)."""
    if quant in ("FP16", "BF16") or not _is_block_linear(t):
        return 2 * t.elements
    groups = math.ceil(t.cols / group)
    qweight = t.elements // 2  # 4 bits per weight, packed in int32
    qzeros = groups * math.ceil(t.rows / 8) * 4  # 4-bit zero points, 8 per int32
    scales = groups * t.rows * 2  # fp16
    g_idx = t.cols * 4 if quant == "GPTQ" else 0  # int32 group index per input row
    return qweight + qzeros + scales + g_idx


def weights_bytes(m: ModelShape, quant: str) -> int:
    """Bytes the weights of model `m` take at `quant` (disk and, loaded, VRAM)."""
    if quant in HF_QUANTS:
        return sum(hf_bytes(t, quant) for t in tensors(m))
    return sum(ggml_bytes(t, gguf_type(t, quant, m)) for t in tensors(m))


def engine_of(quant: str) -> str:
    """The engine that serves a quantisation: Hugging Face formats on vLLM, GGUF on llama.cpp."""
    return "vllm" if quant in HF_QUANTS else "llama.cpp"
