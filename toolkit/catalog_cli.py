"""`rigpivot models add PATH`: size an operator's own model from its files and add it to the
farm's catalog (models.yml beside the farm file), where preflight plans it like a built-in one.

- A Hugging Face folder: config.json (the architecture) and the safetensors headers (dtype,
  shape and byte range of every tensor; the header is 8 bytes of little-endian length and
  JSON, read without touching the weights). Served by vLLM.
- A GGUF file: its tensor table and metadata, through the `gguf` package. Served by llama.cpp.

The size recorded is the sum of the tensors' bytes.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from toolkit.errors import BadInputError
from toolkit.hardware import ModelShape, farm_catalog_path, model_catalog

models_app = typer.Typer(
    help="The farm's own models: size them from their files for preflight.",
    no_args_is_help=True,
)
console = Console()

# safetensors dtypes -> bytes per element (the safetensors format specification)
ST_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
_MAX_HEADER = 100 * 2**20


def safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table of a .safetensors file: {name: {dtype, shape, data_offsets}}."""
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise BadInputError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER:
                raise BadInputError(f"{path}: not a safetensors file (header of {n} bytes)")
            header: dict[str, Any] = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        raise BadInputError(f"{path}: cannot read its safetensors header: {e}") from e
    header.pop("__metadata__", None)
    return header


def tensor_bytes(name: str, t: dict[str, Any], path: Path) -> int:
    """Bytes of one tensor: dtype size x elements, which its byte range must agree with."""
    elements = 1
    for d in t["shape"]:
        elements *= int(d)
    size = elements * ST_DTYPE_BYTES[t["dtype"]]
    start, end = t["data_offsets"]
    if end - start != size:
        raise BadInputError(f"{path}: tensor {name} spans {end - start} bytes, not {size}")
    return size


def _quant_of(config: dict[str, Any]) -> str:
    qc = config.get("quantization_config") or {}
    if qc.get("quant_method"):
        return str(qc["quant_method"]).upper()
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return {"bfloat16": "BF16", "float16": "FP16", "float32": "FP32"}.get(dtype, dtype.upper())


def _sliding(model_type: str, window: int | None, layers: int) -> dict[str, Any]:
    if not window:
        return {}
    # Gemma-2 alternates local and global layers; other models window every layer.
    swa = layers // 2 if model_type.startswith("gemma") else layers
    return {"sliding_window": int(window), "sliding_window_layers": swa}


def size_hf_folder(folder: Path) -> tuple[ModelShape, str]:
    """A Hugging Face model folder's shape and size; returns it and its quantisation."""
    cfg_path = folder / "config.json"
    try:
        config: dict[str, Any] = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise BadInputError(f"{cfg_path}: cannot read the model's config.json: {e}") from e
    cfg = config.get("text_config") or config
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise BadInputError(f"{folder}: no .safetensors files (only safetensors are read)")
    total = 0
    elements = 0
    for f in files:
        for name, t in safetensors_header(f).items():
            total += tensor_bytes(name, t, f)
            n = 1
            for d in t["shape"]:
                n *= int(d)
            elements += n
    quant = _quant_of(config)
    try:
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        model_type = str(cfg.get("model_type", ""))
        window = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None
        shape = ModelShape(
            name=folder.resolve().name,
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]),
            layers=layers,
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            tie_word_embeddings=bool(
                cfg.get("tie_word_embeddings", model_type.startswith("gemma"))
            ),
            max_context=int(cfg.get("max_position_embeddings") or 4096),
            source=str(folder.resolve() / "config.json"),
            files={quant: total},
            engine="vllm",
            # Packed 4-bit tensors do not count parameters: those come from the architecture.
            params=elements if quant in ("BF16", "FP16", "FP32") else None,
            path=str(folder.resolve()),
            **_sliding(model_type, window, layers),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise BadInputError(f"{cfg_path}: missing or odd architecture field: {e}") from e
    return shape, quant


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    return f.contents() if f is not None else None


def size_gguf(path: Path) -> tuple[ModelShape, str]:
    """A GGUF file's shape and size, from its metadata and tensor table."""
    from gguf import GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(path)
    except (OSError, ValueError) as e:
        raise BadInputError(f"{path}: cannot read it as GGUF: {e}") from e
    arch = str(_field(reader, "general.architecture") or "llama")
    total = sum(int(t.n_bytes) for t in reader.tensors)
    params = sum(int(t.n_elements) for t in reader.tensors)
    names = {t.name for t in reader.tensors}
    ftype = _field(reader, "general.file_type")
    if ftype is not None:
        quant = LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    else:  # the commonest tensor type
        types = [t.tensor_type.name for t in reader.tensors]
        quant = max(set(types), key=types.count)

    def a(key: str) -> Any:
        return _field(reader, f"{arch}.{key}")

    try:
        layers = int(a("block_count"))
        hidden = int(a("embedding_length"))
        heads = int(a("attention.head_count"))
        ff = a("feed_forward_length")
        kv = a("attention.head_count_kv")
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        vocab = a("vocab_size") or (len(tokens.data) if tokens is not None else 0)
        shape = ModelShape(
            name=str(_field(reader, "general.name") or path.stem),
            hidden_size=hidden,
            intermediate_size=int(max(ff) if isinstance(ff, list) else ff),
            vocab_size=int(vocab),
            layers=layers,
            heads=heads,
            kv_heads=int(max(kv) if isinstance(kv, list) else kv or heads),
            head_dim=int(a("attention.key_length") or hidden // heads),
            tie_word_embeddings="output.weight" not in names,
            max_context=int(a("context_length") or 4096),
            source=str(path.resolve()),
            files={quant: total},
            engine="llama.cpp",
            params=params,
            path=str(path.resolve()),
            **_sliding(arch, a("attention.sliding_window"), layers),
        )
    except (TypeError, ValueError) as e:
        raise BadInputError(f"{path}: missing or odd {arch}.* metadata: {e}") from e
    return shape, quant


def size_model(path: Path) -> tuple[ModelShape, str]:
    if path.is_dir():
        return size_hf_folder(path)
    if path.suffix.lower() == ".gguf" and path.is_file():
        return size_gguf(path)
    raise BadInputError(
        f"{path}: not a Hugging Face model folder (config.json + *.safetensors) nor a .gguf file"
    )


def model_key(shape: ModelShape) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", shape.name.lower()).strip("-") or "model"


def add_model(path: Path, catalog: Path, key: str | None = None) -> tuple[str, ModelShape]:
    """Size the model at `path` and write it into the farm catalog file `catalog`."""
    shape, _ = size_model(path)
    key = key or model_key(shape)
    if key in model_catalog().models:
        raise BadInputError(
            f"{key!r} is a built-in model of the catalog: choose another name with --key"
        )
    data: dict[str, Any] = {}
    if catalog.exists():
        try:
            data = yaml.safe_load(catalog.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise BadInputError(f"farm model catalog {catalog}: {e}") from e
    models = data.setdefault("models", {}) or {}
    data["models"] = models
    models[key] = shape.model_dump(exclude_defaults=True)
    text = (
        "# The farm's own models, sized from their files by `rigpivot models add`.\n"
        "# Preflight plans them like the built-in ones: add the key to rigpivot_target_models.\n"
    )
    catalog.parent.mkdir(parents=True, exist_ok=True)
    catalog.write_text(text + yaml.safe_dump(data, sort_keys=False))
    return key, shape


@models_app.command("add")
def add(
    path: Annotated[Path, typer.Argument(help="A Hugging Face model folder or a .gguf file.")],
    inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory", "-i", help="The farm file: the catalog is models.yml beside it."
        ),
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option("--catalog", help="The farm's model catalog file to write.")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="The model's name in rigpivot_target_models.")
    ] = None,
) -> None:
    """Size a model from its own files and add it to the farm's catalog."""
    if catalog is not None:
        target = catalog
    elif inventory is not None:
        target = farm_catalog_path(inventory)
    else:
        raise BadInputError("models add: pass the farm file (--inventory) or --catalog FILE")
    name, shape = add_model(path, target, key)
    quant, size = next(iter(shape.files.items()))
    console.print(
        f"{name}: {shape.name} {quant} for {shape.engine}, {size} bytes "
        f"({size / 1e9:.2f} GB), {shape.params_b:.2f} B parameters, {shape.layers} layers, "
        f"{shape.kv_heads} KV heads × {shape.head_dim}, context {shape.max_context}"
    )
    console.print(
        f"added to {target}; plan it with rigpivot_target_models including {name!r}",
        soft_wrap=True,
    )
