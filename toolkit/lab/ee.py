"""The execution environment's image for the lab: what AWX (and ansible-navigator) would run
rigpivot.farm's playbooks in, built here from execution-environment.yml on the lab's own Debian
base, since no registry is reachable.

The build context is ansible-builder's (`make ee-context` makes the same one): the collection's
artifact, the rigpivot package's wheel, `ansible-builder create`. The image is tagged with the
hash of that context's contents (the archives' members, not their timestamps), so it is built
again only when the collection, the package or the definition changes. Its Python requirements
come from PyPI during the build, through the build host's own trust store (mounted read-only
into the build's steps: a site whose HTTPS goes through an inspecting proxy trusts it there).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from toolkit.errors import LabError
from toolkit.lab.image import cache_dir, cache_lock, digest, ensure_base, prune_old
from toolkit.lab.podman import image_exists, podman

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
EE_REPO = "localhost/rigpivot-ee"
TRUST_STORE = Path("/etc/ssl/certs")


def _tool(name: str) -> str:
    """A tool of the Python environment rigpivot runs in (ansible-galaxy, ansible-builder)."""
    return str(Path(sys.executable).parent / name)


def _run(*cmd: str, cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        what = Path(cmd[0]).name
        raise LabError(f"{what} failed while making the EE context:\n" + "\n".join(tail))


def make_context(out: Path, repo: Path = REPO) -> Path:
    """ansible-builder's build context in `out`/context, as `make ee-context` makes it."""
    (out / "build").mkdir(parents=True, exist_ok=True)
    _run(_tool("ansible-galaxy"), "collection", "build", "--force", "--output-path",
         str(out / "build" / "collection"), str(repo), cwd=out)  # fmt: skip
    _run(_tool("pip"), "wheel", "--quiet", "--no-deps", "-w", str(out / "build" / "wheel"),
         str(repo), cwd=out)  # fmt: skip
    definition = (repo / "execution-environment.yml").read_bytes()
    (out / "execution-environment.yml").write_bytes(definition)
    _run(_tool("ansible-builder"), "create", "-f", "execution-environment.yml", "-c",
         str(out / "context"), "--output-filename", "Containerfile", cwd=out)  # fmt: skip
    return out / "context"


def context_digest(context: Path) -> str:
    """The hash of what the context holds: each archive by its members' names, modes and
    contents (a fresh clone's build has other timestamps, the same image)."""
    parts: list[bytes | str] = []
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        parts.append(str(path.relative_to(context)))
        if path.name.endswith(".tar.gz"):
            with tarfile.open(path) as tar:
                for m in sorted(tar.getmembers(), key=lambda m: m.name):
                    f = tar.extractfile(m) if m.isfile() else None
                    parts += [m.name, oct(m.mode), f.read() if f else b""]
        elif path.suffix == ".whl":
            with zipfile.ZipFile(path) as whl:
                for name in sorted(whl.namelist()):
                    parts += [name, whl.read(name)]
        else:
            parts.append(path.read_bytes())
    return digest(parts)


def ensure_ee_image() -> str:
    """The EE image's tag, building it when its context changed (a few minutes the first time,
    on a machine that has none of its layers; seconds when only the collection changed)."""
    with cache_lock("ee"):
        ensure_base()  # execution-environment.yml names the lab's base by its tag
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="ee-") as tmp:
            context = make_context(Path(tmp))
            tag = f"{EE_REPO}:{context_digest(context)}"
            if image_exists(tag):
                return tag
            log.info("building the execution environment image %s", tag)
            trust = ["--volume", f"{TRUST_STORE}:{TRUST_STORE}:ro"] if TRUST_STORE.is_dir() else []
            podman("build", "--pull=never", "--network", "host", *trust,
                   "-f", str(context / "Containerfile"), "-t", tag, str(context),
                   timeout=1800)  # fmt: skip
        prune_old(EE_REPO, keep=tag)
        return tag
