"""The farm's model store and wheelhouse in the lab: what `inference_server` installs on a rig.

A rig on the lab network reaches no package index and no model hub, as on many real farms:
it installs its inference engine from the farm mirror's `wheels/` (pip `--no-index
--find-links`) and downloads its model from `models/`. This module fills both:

- `build_tiny_model`: a tiny llama-architecture GGUF (2 layers, 64 wide, random weights from
  a fixed seed, a SentencePiece-style vocabulary with byte fallback, a chat template). It
  loads in llama.cpp like any real model, answers in milliseconds on CPU, and its bytes are
  the same on every build.
- `build_wheelhouse`: `llama-cpp-python[server]` and every dependency as wheels for the
  rigs' Python (Debian 12: CPython 3.11, x86_64, glibc 2.36). llama-cpp-python ships only an
  sdist, so its CPU wheel is built once (minutes) and cached under `~/.cache/rigpivot/`,
  keyed by its version and CMake flags; the dependencies are downloaded once, keyed too.
- `publish`: both into a farm directory (`models/`, `wheels/`).
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from toolkit.errors import LabError
from toolkit.lab.image import cache_dir, cache_lock

log = logging.getLogger(__name__)

MODEL_FILE = "tiny-llama-f32.gguf"
MODEL_NAME = "tiny-llama"
MODEL_SEED = 20261122

LLAMA_CPP_VERSION = "0.3.36"
LLAMA_CPP_REQUIREMENT = f"llama-cpp-python[server]=={LLAMA_CPP_VERSION}"
# Portable CPU build (no -march=native: the wheel runs on any x86_64 rig); LLaVA is not
# needed to serve text and halves the build.
LLAMA_CPP_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
# The rigs' interpreter: Debian 12's CPython 3.11 on x86_64 with glibc 2.36.
RIG_PYTHON = "3.11"
RIG_GLIBC_MINOR = 36
BUILD_TIMEOUT = 3600.0

# Where the lead's first build of the wheel lands; reused instead of building again.
_SEED_BUILD = "wheel-build/out"

# -- the tiny model -----------------------------------------------------------------------

_N_EMBD = 64
_N_LAYERS = 2
_N_HEAD = 4
_N_FF = 128
_CONTEXT = 2048
# Words of the farm, as SentencePiece pieces ("▁" marks a word start), so prompts tokenize
# into words and generated text reads as words.
_WORDS = (
    "the a an and or of to in on for with is are was be it this that at by from as not "
    "rig rigs GPU GPUs card cards farm miner mining pool hash rate watt power fan clock "
    "memory driver CUDA model token tokens server serve serving node nodes rack racks "
    "hello world yes no ok ready done start stop run runs running test answer question "
    "what why how when where who which can will would should could may might must "
    "I you he she we they me him her us them my your our their its "
    "one two three four five six seven eight nine ten zero "
    "good bad fast slow big small new old hot cold up down left right in out on off "
    "time day night year light dark red green blue black white gray "
    "make made take took give gave get got see saw know knew think thought say said "
    "go went come came work worked help helped use used find found tell told"
)
_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Pieces, scores and token types of a SentencePiece-style vocabulary with byte fallback."""
    from gguf import TokenType

    tokens = ["<unk>", "<s>", "</s>"]
    types = [int(TokenType.UNKNOWN), int(TokenType.CONTROL), int(TokenType.CONTROL)]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [int(TokenType.BYTE)] * 256
    pieces = ["▁"] + [chr(c) for c in range(0x21, 0x7F)]
    pieces += [f"▁{w}" for w in dict.fromkeys(_WORDS.split())]
    tokens += pieces
    types += [int(TokenType.NORMAL)] * len(pieces)
    # SentencePiece merges the pair whose merged piece scores highest: longer pieces win.
    scores = [0.0] * 259 + [-1000.0 + len(p) for p in pieces]
    return tokens, scores, types


def build_tiny_model(out: Path) -> Path:
    """Write the tiny GGUF and its `.sha256` into `out`; return the model's path.

    Every build writes the same bytes. The LM head gives control and byte tokens a logit of
    0 while every word and character piece scores ≈ 24 (a constant channel of the residual
    stream, untouched by attention and MLP, carries it), so sampled text is printable words.
    """
    import numpy as np
    from gguf import GGUFWriter, LlamaFileType, TokenType

    out.mkdir(parents=True, exist_ok=True)
    path = out / MODEL_FILE
    tokens, scores, types = _vocabulary()
    n_vocab = len(tokens)
    rng = np.random.default_rng(MODEL_SEED)

    def rand(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    embd = rand(n_vocab, _N_EMBD, scale=0.5)
    embd[:, 0] = 8.0
    head = rand(n_vocab, _N_EMBD, scale=1.0)
    head[:, 0] = 3.0
    printable = np.array([t == TokenType.NORMAL for t in types])
    head[~printable] = 0.0

    tmp = out / f".{MODEL_FILE}.tmp"
    writer = GGUFWriter(tmp, "llama")
    writer.add_name(MODEL_NAME)
    writer.add_file_type(int(LlamaFileType.ALL_F32))
    writer.add_context_length(_CONTEXT)
    writer.add_embedding_length(_N_EMBD)
    writer.add_block_count(_N_LAYERS)
    writer.add_feed_forward_length(_N_FF)
    writer.add_head_count(_N_HEAD)
    writer.add_head_count_kv(_N_HEAD)
    writer.add_rope_dimension_count(_N_EMBD // _N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(_CHAT_TEMPLATE)

    writer.add_tensor("token_embd.weight", embd)
    for i in range(_N_LAYERS):
        attn_out = rand(_N_EMBD, _N_EMBD)
        ffn_down = rand(_N_EMBD, _N_FF)
        # Row 0 of what each block adds to the residual stream stays 0: the constant
        # channel reaches the LM head intact.
        attn_out[0] = 0.0
        ffn_down[0] = 0.0
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(_N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", rand(_N_EMBD, _N_EMBD))
        writer.add_tensor(f"{blk}.attn_k.weight", rand(_N_EMBD, _N_EMBD))
        writer.add_tensor(f"{blk}.attn_v.weight", rand(_N_EMBD, _N_EMBD))
        writer.add_tensor(f"{blk}.attn_output.weight", attn_out)
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(_N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", rand(_N_FF, _N_EMBD))
        writer.add_tensor(f"{blk}.ffn_up.weight", rand(_N_FF, _N_EMBD))
        writer.add_tensor(f"{blk}.ffn_down.weight", ffn_down)
    writer.add_tensor("output_norm.weight", np.ones(_N_EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", head)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    digest = _sha256(tmp)
    if path.exists() and _sha256(path) == digest:
        tmp.unlink()
    else:
        os.replace(tmp, path)
    _write_if_changed(out / f"{MODEL_FILE}.sha256", f"{digest}  {MODEL_FILE}\n")
    return path


# -- the wheelhouse -----------------------------------------------------------------------


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def _rig_platforms() -> list[str]:
    # pip expands only the legacy manylinux2014/2010 aliases by itself: name every
    # manylinux_2_x the rigs' glibc accepts, and plain linux_x86_64 for the wheel built here.
    tags = [f"manylinux_2_{m}_x86_64" for m in range(RIG_GLIBC_MINOR, 16, -1)]
    return [*tags, "manylinux2014_x86_64", "linux_x86_64"]


def llama_cpp_wheel() -> Path:
    """The CPU wheel of llama-cpp-python, built from its sdist once and cached."""
    wanted = f"llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"
    key = _key(LLAMA_CPP_VERSION, LLAMA_CPP_CMAKE_ARGS, RIG_PYTHON)
    cached = cache_dir() / "wheels" / f"llama-cpp-python-{LLAMA_CPP_VERSION}-{key}"
    with cache_lock("llama-cpp-wheel"):
        found = sorted(cached.glob(wanted))
        if found:
            return found[-1]
        seed = sorted((cache_dir() / _SEED_BUILD).glob(wanted))
        tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix="wheel-tmp-"))
        try:
            if seed:
                log.info("reusing the llama-cpp-python wheel built in %s", seed[-1].parent)
                shutil.copy2(seed[-1], tmp / seed[-1].name)
            else:
                _build_llama_cpp_wheel(tmp)
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(cached, ignore_errors=True)
            os.replace(tmp, cached)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        found = sorted(cached.glob(wanted))
        if not found:
            raise LabError(f"no {wanted} in {cached} after the build")
        return found[-1]


def _build_llama_cpp_wheel(dest: Path) -> None:
    if f"{sys.version_info.major}.{sys.version_info.minor}" != RIG_PYTHON:
        raise LabError(
            f"llama-cpp-python's wheel must be built by CPython {RIG_PYTHON} (the rigs'), "
            f"not {sys.version.split()[0]}: run the lab from the project's 3.11 venv"
        )
    log.info("building llama-cpp-python %s from its sdist (4-6 min, once)", LLAMA_CPP_VERSION)
    cmd = [
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary", "llama-cpp-python",
        "--wheel-dir", str(dest), f"llama-cpp-python=={LLAMA_CPP_VERSION}",
    ]  # fmt: skip
    env = {**os.environ, "CMAKE_ARGS": LLAMA_CPP_CMAKE_ARGS}
    logfile = dest.parent / f"llama-cpp-python-{LLAMA_CPP_VERSION}.build.log"
    with logfile.open("wb") as out:
        proc = subprocess.run(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT
        )
    if proc.returncode != 0:
        raise LabError(f"building llama-cpp-python failed (exit {proc.returncode}); see {logfile}")


def _dependencies(llama_wheel: Path) -> Path:
    """Every wheel `llama-cpp-python[server]` needs on the rigs, downloaded once and cached."""
    platforms = _rig_platforms()
    cached = (
        cache_dir()
        / "wheelhouse"
        / _key(LLAMA_CPP_REQUIREMENT, llama_wheel.name, RIG_PYTHON, *platforms)
    )
    with cache_lock("wheelhouse"):
        if (cached / ".complete").exists():
            return cached
        tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix="wheelhouse-tmp-"))
        try:
            cmd = [
                sys.executable, "-m", "pip", "download", "--quiet",
                "--dest", str(tmp), "--find-links", str(llama_wheel.parent),
                "--only-binary=:all:", "--implementation", "cp",
                "--python-version", RIG_PYTHON, "--abi", f"cp{RIG_PYTHON.replace('.', '')}",
                "--abi", "abi3", "--abi", "none",
                *(a for p in platforms for a in ("--platform", p)),
                LLAMA_CPP_REQUIREMENT,
            ]  # fmt: skip
            log.info("downloading the wheels %s needs", LLAMA_CPP_REQUIREMENT)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise LabError(
                    f"pip download of {LLAMA_CPP_REQUIREMENT}'s dependencies failed:\n"
                    f"{proc.stderr.strip()[-2000:]}"
                )
            (tmp / ".complete").write_text(LLAMA_CPP_REQUIREMENT + "\n")
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(cached, ignore_errors=True)
            os.replace(tmp, cached)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cached


def build_wheelhouse(out: Path) -> Path:
    """Fill `out` with the wheels of `llama-cpp-python[server]` and its dependencies.

    A flat directory with an `index.html` of links, so `pip install --no-index --find-links
    <url of out>/` works behind any static web server. Wheels no longer needed are removed.
    """
    llama = llama_cpp_wheel()
    deps = _dependencies(llama)
    out.mkdir(parents=True, exist_ok=True)
    wheels = {w.name: w for w in deps.glob("*.whl")}
    wheels[llama.name] = llama
    for name, src in sorted(wheels.items()):
        dst = out / name
        if dst.exists() and dst.stat().st_size == src.stat().st_size:
            continue
        tmp = out / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    for old in out.glob("*.whl"):
        if old.name not in wheels:
            old.unlink()
    links = "\n".join(
        f'<a href="{html.escape(n)}">{html.escape(n)}</a><br>' for n in sorted(wheels)
    )
    _write_if_changed(
        out / "index.html",
        f"<!DOCTYPE html>\n<html><body>\n<h1>farm wheelhouse</h1>\n{links}\n</body></html>\n",
    )
    return out


def publish(farm_dir: Path) -> None:
    """Put the tiny model under `farm_dir/models/` and the wheelhouse under `farm_dir/wheels/`.

    Re-runnable: unchanged files are left alone (the farm mirror may be serving them).
    """
    tiny = build_tiny_model(farm_dir / "models")
    publish_catalog_stand_ins(tiny)
    build_wheelhouse(farm_dir / "wheels")


def publish_catalog_stand_ins(tiny: Path) -> list[Path]:
    """The farm's model store holds every GGUF preflight can plan (`<model>-<quant>.gguf`, the
    name the plan gives each card); the lab, which has no such files and no GPU, serves its
    tiny model under each of those names (hard links: no space), so a lab rig can run
    preflight's own per-card plan on llama.cpp, on CPU."""
    from toolkit.hardware import model_catalog

    catalog = model_catalog()
    made = []
    for key, shape in catalog.models.items():
        for quant in shape.quants("llama.cpp", catalog.quantizations.get("llama.cpp", [])):
            name = tiny.with_name(f"{key}-{quant.lower()}.gguf")
            if not (name.exists() and name.samefile(tiny)):
                name.unlink(missing_ok=True)
                os.link(tiny, name)
            made.append(name)
    return made


# -- helpers ------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
