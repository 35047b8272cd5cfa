"""execution-environment.yml (ansible-builder v3): `ansible-builder create` makes a build
context from it and the collection's artifact, on the lab's own Debian base (no registry), with
ansible-core and ansible-runner as pyproject.toml pins them. The image is not built here."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from toolkit.lab.ee import make_context
from toolkit.lab.image import base_tag

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EE = REPO / "execution-environment.yml"


def definition() -> dict:
    return dict(yaml.safe_load(EE.read_text()))


def pinned(name: str) -> str:
    """pyproject.toml's requirement for `name` (without its comment)."""
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(rf'^\s*"({re.escape(name)}[<>=!~][^"]*)"', text, re.M)
    assert match, name
    return match.group(1)


def project_version() -> str:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', text, re.M)
    assert match
    return match.group(1)


def galaxy_version() -> str:
    return str(yaml.safe_load((REPO / "galaxy.yml").read_text())["version"])


def test_the_definition_names_the_labs_base_and_the_pinned_ansible():
    ee = definition()
    assert ee["version"] == 3
    assert ee["images"]["base_image"]["name"] == base_tag()  # the lab's debootstrapped base
    deps = ee["dependencies"]
    assert deps["ansible_core"]["package_pip"] == pinned("ansible-core")
    assert deps["ansible_runner"]["package_pip"] == pinned("ansible-runner")
    version = galaxy_version()
    assert deps["galaxy"]["collections"] == [
        {"name": f"collections/rigpivot-farm-{version}.tar.gz", "type": "file"}
    ]
    assert ee["options"]["tags"] == [f"localhost/rigpivot-ee:{version}"]


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the build context `ansible-builder create` wrote, the artifact it was given): the
    definition beside the collection built where its additional_build_files looks."""
    work = tmp_path_factory.mktemp("ee")
    context = make_context(work)  # as `rigpivot lab ee` makes it before building the image
    out = work / "build" / "collection"
    return context, out / f"rigpivot-farm-{galaxy_version()}.tar.gz"


def test_ansible_builder_create_writes_a_containerfile_on_the_labs_base(context):
    ctx, _ = context
    text = (ctx / "Containerfile").read_text()
    assert f'ARG EE_BASE_IMAGE="{base_tag()}"' in text
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms == ["$EE_BASE_IMAGE", "base", "base", "base"]  # nothing from a registry
    assert 'ARG PKGMGR="/usr/bin/apt-get"' in text
    assert f'ARG ANSIBLE_INSTALL_REFS="{pinned("ansible-core")} {pinned("ansible-runner")}"' in text
    # Debian's ensurepip refuses the system Python: pip comes from apt, after apt's lists.
    assert "pip_install $PYCMD" not in text and 'ARG PYPKG="python3-pip"' in text
    assert text.index("RUN apt-get update") < text.index("RUN $PKGMGR install $PYPKG")
    assert text.index("install-from-bindep") < text.index("RUN apt-get clean")


def test_the_context_holds_the_collection_and_its_requirements_install_it(context, tmp_path):
    ctx, artifact = context
    build = ctx / "_build"
    shipped = build / "collections" / artifact.name
    assert shipped.read_bytes() == artifact.read_bytes()
    assert "openssh-client [platform:dpkg]" in (build / "bindep.txt").read_text().splitlines()
    # farm_plan's rules: the rigpivot package, as pyproject.toml versions it, in the builder stage
    wheel = f"rigpivot-{project_version()}-py3-none-any.whl"
    assert (build / "wheels" / wheel).is_file()
    assert f"/build/wheels/{wheel}" in (build / "requirements.txt").read_text().splitlines()
    text = (ctx / "Containerfile").read_text()
    builder = text[text.index("FROM base AS builder") :]
    assert builder.index("COPY _build/wheels /build/wheels") < builder.index("introspect")
    # The galaxy stage's command, run where it runs (WORKDIR /build): the requirement resolves.
    proc = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "-r", "requirements.yml",
         "--collections-path", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=build,
        env={"PATH": str(BIN) + ":/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "ansible_collections" / "rigpivot" / "farm" / "plugins" / "modules").is_dir()


def test_the_wheel_holds_every_file_of_the_package(context):
    """What the EE installs is the whole package: its data files (the GPU table, the model
    catalog, the lab's image files) as well as its modules."""
    ctx, _ = context
    (wheel,) = (ctx / "_build" / "wheels").glob("rigpivot-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    package = {
        str(p.relative_to(REPO))
        for p in (REPO / "toolkit").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert package - shipped == set()
