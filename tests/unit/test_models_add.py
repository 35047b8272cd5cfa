"""`rigpivot models add`: a model sized from its own files joins the farm's catalog."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from tests.unit.factories import card, rig
from toolkit.catalog_cli import safetensors_header, size_model
from toolkit.cli import app
from toolkit.errors import BadInputError
from toolkit.hardware import catalog_with, farm_catalog_path
from toolkit.inventory import Host
from toolkit.policy import judge_rig, policy_for

runner = CliRunner()

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "vocab_size": 300,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def _hf_folder(root: Path) -> tuple[Path, int]:
    """A tiny llama-shaped Hugging Face folder in two shards; returns it and its tensor bytes."""
    folder = root / "my-tiny-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    rng = np.random.default_rng(0)
    h, ff, kv = 64, 128, 2 * 16

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float16)

    shard1 = {"model.embed_tokens.weight": w(300, h), "model.norm.weight": w(h)}
    shard2 = {"lm_head.weight": w(300, h)}
    for i in range(2):
        p = f"model.layers.{i}."
        shard1 |= {
            p + "self_attn.q_proj.weight": w(h, h),
            p + "self_attn.k_proj.weight": w(kv, h),
            p + "self_attn.v_proj.weight": w(kv, h),
            p + "self_attn.o_proj.weight": w(h, h),
        }
        shard2 |= {p + "mlp.gate_proj.weight": w(ff, h), p + "mlp.up_proj.weight": w(ff, h),
                   p + "mlp.down_proj.weight": w(h, ff), p + "input_layernorm.weight": w(h),
                   p + "post_attention_layernorm.weight": w(h)}  # fmt: skip
    save_file(shard1, str(folder / "model-00001-of-00002.safetensors"))
    save_file(shard2, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "tokenizer.json").write_text("{}")
    return folder, sum(a.nbytes for a in (shard1 | shard2).values())


def test_hf_folder_is_sized_from_its_safetensors_headers(tmp_path: Path) -> None:
    folder, nbytes = _hf_folder(tmp_path)
    shape, quant = size_model(folder)
    assert quant == "BF16" and shape.engine == "vllm"
    assert shape.files == {"BF16": nbytes}
    assert (shape.layers, shape.kv_heads, shape.head_dim, shape.vocab_size) == (2, 2, 16, 300)
    assert shape.params == nbytes // 2
    # The architecture alone gives the same figure.
    assert shape.model_copy(update={"files": {}}).weights_bytes("BF16") == nbytes


def test_the_header_is_read_without_the_weights(tmp_path: Path) -> None:
    folder, _ = _hf_folder(tmp_path)
    f = folder / "model-00002-of-00002.safetensors"
    header_len = int.from_bytes(f.read_bytes()[:8], "little")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(f.read_bytes()[: 8 + header_len])  # the header only: no weight bytes
    assert set(safetensors_header(cut)) == set(safetensors_header(f))


def test_lab_gguf_is_sized_from_its_tensor_table(tmp_path: Path) -> None:
    from toolkit.lab import models as lab

    path = lab.build_tiny_model(tmp_path / "store")
    shape, quant = size_model(path)
    n_vocab = len(lab._vocabulary()[0])
    e, ff, layers = lab._N_EMBD, lab._N_FF, lab._N_LAYERS
    per_layer = 4 * e * e + 3 * e * ff + 2 * e  # q, k, v, o; gate, up, down; two norms
    elements = 2 * n_vocab * e + e + layers * per_layer  # embeddings, head, output norm
    assert (quant, shape.engine) == ("F32", "llama.cpp")
    assert shape.files == {"F32": 4 * elements}  # every tensor F32: 4 bytes per element
    assert shape.params == elements
    assert (shape.layers, shape.hidden_size, shape.vocab_size) == (layers, e, n_vocab)
    assert shape.max_context == 2048 and not shape.tie_word_embeddings


def test_models_add_writes_the_farm_catalog_and_preflight_plans_it(tmp_path: Path) -> None:
    farm = tmp_path / "farm.ini"
    farm.write_text("[rigs]\nrig01 ansible_host=10.0.0.1\n")
    folder, nbytes = _hf_folder(tmp_path)
    res = runner.invoke(app, ["models", "add", str(folder), "-i", str(farm)])
    assert res.exit_code == 0, res.output
    assert f"{nbytes} bytes" in res.output and "my-tiny-llama" in res.output
    gguf = tmp_path / "tiny.gguf"
    from toolkit.lab import models as lab

    gguf.write_bytes(lab.build_tiny_model(tmp_path / "store").read_bytes())
    res = runner.invoke(
        app, ["models", "add", str(gguf), "--catalog", str(farm_catalog_path(farm))]
    )
    assert res.exit_code == 0, res.output
    cat = catalog_with(farm_catalog_path(farm))
    assert {"my-tiny-llama", "tiny-llama"} <= set(cat.models)
    assert cat.models["my-tiny-llama"].files == {"BF16": nbytes}
    host = Host(
        "rig01", vars={"rigpivot_target_models": ["tiny-llama", "my-tiny-llama"],
                       "rigpivot_min_context": 1024},
    )  # fmt: skip
    v = judge_rig(host, rig(card("rtx3060", 0), card("p106", 1)), policy_for(host, cat))
    plans = {p.gpu: (p.fit.engine, p.fit.model) for p in v.plans}
    assert plans[1] == ("llama.cpp", "tiny-llama")  # Pascal: llama.cpp and the GGUF
    assert plans[0][1] in {"tiny-llama", "my-tiny-llama"}


def test_a_built_in_name_or_an_unknown_path_is_refused(tmp_path: Path) -> None:
    folder, _ = _hf_folder(tmp_path)
    from toolkit.catalog_cli import add_model

    with pytest.raises(BadInputError, match="built-in"):
        add_model(folder, tmp_path / "models.yml", key="llama-3.1-8b")
    with pytest.raises(BadInputError, match="not a Hugging Face model folder"):
        size_model(tmp_path / "nothing.bin")
