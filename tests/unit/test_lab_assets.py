"""The lab's generated assets: the tiny model the rigs serve and the kernel headers package."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import gguf
import pytest

from toolkit.lab import drivers, models


def test_tiny_model_is_deterministic_and_a_readable_llama_gguf(tmp_path: Path):
    a = models.build_tiny_model(tmp_path / "a")
    b = models.build_tiny_model(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes(), "same seed, same bytes: the mirror's checksum holds"
    assert (a.parent / f"{a.name}.sha256").read_text().split()[0] == models._sha256(a)
    reader = gguf.GGUFReader(a)
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    assert "tokenizer.chat_template" in reader.fields
    assert a.stat().st_size < 2 * 2**20


def test_headers_package_follows_the_host_kernel(tmp_path: Path):
    image_dir = drivers.Path(drivers.__file__).with_name("image")
    with mock.patch.object(drivers, "kernel_release", return_value="6.1.0-99-amd64"):
        key_a = drivers.cache_key(image_dir)
        deb = drivers.build_headers("6.1.0-99-amd64", tmp_path)
    with mock.patch.object(drivers, "kernel_release", return_value="6.1.0-100-amd64"):
        key_b = drivers.cache_key(image_dir)
    assert deb.name.startswith("linux-headers-6.1.0-99-amd64_")
    assert key_a != key_b, "a new host kernel must rebuild the mirror's packages"


@pytest.mark.parametrize("version", ["470.256.02", "550.127.05"])
def test_driver_package_names_follow_the_branch(version: str):
    assert drivers.driver_package(version) == f"nvidia-driver-{version.split('.')[0]}"
