"""Where a secret could leak, and how to find it: in text, in bytes, in base64 (Ansible's slurp
results and job events carry file content as base64), in gzip and tar archives."""

from __future__ import annotations

import base64
import gzip
import io
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path


def _encodings(secret: str) -> list[bytes]:
    """The secret as bytes, and the part of its base64 that any base64 of data containing it
    holds (one per alignment)."""
    raw = secret.encode()
    forms = [raw]
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw)
        forms.append(enc[4 if pad else 0 : -4])
    return forms


def _contents(path: Path) -> Iterator[bytes]:
    """A file's bytes, and what a gzip or tar archive in it holds."""
    data = path.read_bytes()
    yield data
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
        yield data
    if tarfile.is_tarfile(io.BytesIO(data)):
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                f = tar.extractfile(member) if member.isfile() else None
                if f is not None:
                    yield f.read()


def leaks(data: bytes | str, where: str, secrets: dict[str, str]) -> list[str]:
    """`<what> in <where>` for each of `secrets` (what -> value) found in `data`."""
    if isinstance(data, str):
        # Rich folds long cells over lines and draws borders: look at the text without them.
        data = (data + "\n" + re.sub(r"[\s│┃|]", "", data)).encode()
    return [
        f"{what} in {where}"
        for what, secret in secrets.items()
        if any(form in data for form in _encodings(secret))
    ]


def tree_leaks(root: Path, secrets: dict[str, str]) -> list[str]:
    found: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        for blob in _contents(path):
            found += leaks(blob, str(path), secrets)
    return sorted(set(found))
