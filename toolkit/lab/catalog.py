"""The lab's hardware catalog: card models, rig profiles and rack mixes (profiles.yml).

A rig profile expands into a `RigSpec`, the one document a lab rig is built from. It is
written into the rig as /etc/lab/rig.json, where the GPU simulator, the mining simulator
and the first-boot unit read it. It is the rig's *hardware* and its factory state, so
nothing in rigpivot's product code may read it: the product learns about a rig only the
way it would on a real farm, over SSH.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from toolkit.errors import BadInputError, describe_validation_error
from toolkit.lab.drivers import DEBIAN_DRIVER, DEBIAN_DRIVER_VERSIONS, driver_package

CATALOG_PATH = Path(__file__).with_name("profiles.yml")

# The lab's stand-ins for farm services, reached from rigs by these names on the lab network.
# The HiveOS API (dashboard copies of rig configs, agent stats) has its own name and port, as
# a real HiveOS API host is distinct from the farm's mirror: a firewall can cut one off and
# keep the other.
MIRROR_HOST = "mirror.lab"
POOL_HOST = "pool.lab"
HIVE_API_HOST = "api.hive.lab"
MIRROR_PORT = 8080
POOL_PORT = 4444
HIVE_API_PORT = 8000

# One miner per platform family, with the facts the simulator needs.
MINERS: dict[str, dict[str, str | int]] = {
    "t-rex": {"api_port": 4067, "algo": "etchash", "coin": "ETC"},
    "teamredminer": {"api_port": 4028, "algo": "etchash", "coin": "ETC"},
    "lolminer": {"api_port": 4069, "algo": "etchash", "coin": "ETC"},
    # A miner rigpivot has no name for (a private fork, a renamed binary): found by its GPU use
    # alone, its pool only in its own JSON config.
    "hashd": {"api_port": 4059, "algo": "etchash", "coin": "ETC"},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PowerLimits(_Strict):
    default: int
    min: int
    max: int
    mining: int = Field(gt=0)  # watts drawn with a miner on the card
    inference: int = Field(gt=0)  # watts drawn with an inference engine decoding on it

    @model_validator(mode="after")
    def _draws_within_the_range(self) -> PowerLimits:
        for name in ("mining", "inference"):
            if getattr(self, name) > self.max:
                raise ValueError(f"{name} draw {getattr(self, name)} W exceeds max {self.max} W")
        return self


class CardModel(_Strict):
    vendor: Literal["nvidia", "amd"]
    name: str
    pci_id: str = Field(pattern=r"^[0-9a-f]{4}:[0-9a-f]{4}$")
    vram_mib: int = Field(gt=0)
    compute_cap: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    gfx: str | None = None
    mem_bw_gbs: int = Field(gt=0)
    pcie_max_gen: int = Field(ge=1, le=5)
    pcie_max_width: int = Field(ge=1, le=16)
    power: PowerLimits | None = None
    vbios: str | None = None

    @model_validator(mode="after")
    def _nvidia_cards_have_nvidia_facts(self) -> CardModel:
        if self.vendor == "nvidia" and (self.compute_cap is None or self.power is None):
            raise ValueError("an NVIDIA card needs compute_cap and power")
        return self


class CardSlot(_Strict):
    card: str
    count: int = Field(ge=1, le=16)
    link_gen: int = Field(ge=1, le=5)
    link_width: int = Field(ge=1, le=16)


class RigProfile(_Strict):
    description: str
    platform: Literal["hiveos", "linux"]
    driver: str | None
    # whose packaging the driver came in: NVIDIA's (nvidia-driver-<branch>, HiveOS and most
    # rigs) or Debian's own unversioned `nvidia-driver`
    driver_packaging: Literal["nvidia", "debian"] = "nvidia"
    miner: str
    host_pcie_gen: int = Field(ge=1, le=5)
    cards: list[CardSlot]
    ssh_port: int = 22  # the port the rig's sshd listens on (only that one)


class Catalog(_Strict):
    cards: dict[str, CardModel]
    rigs: dict[str, RigProfile]
    racks: dict[str, list[str]]

    @model_validator(mode="after")
    def _references_resolve(self) -> Catalog:
        for name, rig in self.rigs.items():
            if rig.miner not in MINERS:
                raise ValueError(f"rig profile {name}: unknown miner {rig.miner!r}")
            if rig.driver_packaging == "debian" and rig.driver not in DEBIAN_DRIVER_VERSIONS:
                raise ValueError(
                    f"rig profile {name}: the lab has Debian's driver package only in "
                    f"{', '.join(DEBIAN_DRIVER_VERSIONS)}, not {rig.driver}"
                )
            for slot in rig.cards:
                if slot.card not in self.cards:
                    raise ValueError(f"rig profile {name}: unknown card {slot.card!r}")
        for name, members in self.racks.items():
            for member in members:
                if member not in self.rigs:
                    raise ValueError(f"rack mix {name}: unknown rig profile {member!r}")
        return self

    def profile_names(self) -> list[str]:
        return sorted(self.racks) + sorted(self.rigs)

    def rack_profiles(self, profile: str, rigs: int) -> list[str]:
        """The rig profile of each of `rigs` rigs for a rack mix or a single rig profile."""
        if profile in self.racks:
            mix = self.racks[profile]
        elif all(p in self.rigs for p in profile.split(",")):
            mix = profile.split(",")  # an ad-hoc mix: "hive-3060x6,linux-3090x2"
        else:
            raise BadInputError(
                f"unknown lab profile {profile!r}; choose one of: {', '.join(self.profile_names())}"
            )
        return [mix[i % len(mix)] for i in range(rigs)]


def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    try:
        data = yaml.safe_load(path.read_text())
        return Catalog.model_validate(data)
    except (OSError, yaml.YAMLError) as e:
        raise BadInputError(f"{path}: cannot read the lab catalog: {e}") from e
    except ValidationError as e:
        raise BadInputError(f"{path}: invalid lab catalog:\n{describe_validation_error(e)}") from e


class GpuSpec(BaseModel):
    """One card as installed in a rig: its model facts plus the slot it sits in."""

    index: int
    vendor: Literal["nvidia", "amd"]
    model: str
    name: str
    pci_id: str
    bus_id: str  # lspci form, e.g. "01:00.0"
    uuid: str
    serial: str
    vram_mib: int
    compute_cap: str | None
    gfx: str | None
    mem_bw_gbs: int
    pcie_gen_max_gpu: int
    pcie_gen_max_host: int
    pcie_gen_current: int
    pcie_width_max: int
    pcie_width_current: int
    power: PowerLimits | None
    vbios: str | None


class MinerSpec(BaseModel):
    name: str
    algo: str
    coin: str
    api_port: int
    pool_url: str
    wallet: str
    worker: str
    password: str = "x"


_WORD = r"^[A-Za-z0-9._-]{6,128}$"


class LabSecrets(_Strict):
    """Secrets an operator (or a test) chooses for one lab rig at `lab up`, instead of the
    ones derived from the lab id. They land where a farm keeps them: wallet.conf and rig.conf
    on HiveOS (and the dashboard's copy `hello` restores at boot), the miner's start script
    on plain Linux."""

    wallet: str | None = Field(default=None, pattern=_WORD)
    pool_password: str | None = Field(default=None, pattern=_WORD)
    rig_passwd: str | None = Field(default=None, pattern=_WORD)
    farm_hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")


def load_secrets(path: Path) -> dict[str, LabSecrets]:
    """A YAML (or JSON) mapping of rig name -> LabSecrets fields."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise BadInputError(f"{path}: cannot read lab secrets: {e}") from e
    if not isinstance(raw, dict):
        raise BadInputError(f"{path}: lab secrets must map rig names to their secrets")
    out: dict[str, LabSecrets] = {}
    for rig, value in raw.items():
        try:
            out[str(rig)] = LabSecrets.model_validate(value)
        except ValidationError as e:
            raise BadInputError(
                f"{path}: invalid lab secrets for {rig}:\n{describe_validation_error(e)}"
            ) from e
    return out


class HiveSpec(BaseModel):
    rig_id: int
    rig_passwd: str
    farm_hash: str
    hive_host_url: str


class RigSpec(BaseModel):
    """Everything a lab rig is built from: written to /etc/lab/rig.json in the rig."""

    name: str
    rack: str
    profile: str
    platform: Literal["hiveos", "linux"]
    driver: str | None
    driver_package: str | None = None  # the package the driver was installed from
    miner: MinerSpec
    hive: HiveSpec | None
    gpus: list[GpuSpec]
    lab_minute_seconds: float = 5.0
    ssh_port: int = 22

    @property
    def nvidia_gpus(self) -> list[GpuSpec]:
        return [g for g in self.gpus if g.vendor == "nvidia"]


def _token(seed: str, n: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def _driver_package(rp: RigProfile) -> str | None:
    """The package the rig's driver was installed from."""
    if rp.driver is None:
        return None
    return DEBIAN_DRIVER if rp.driver_packaging == "debian" else driver_package(rp.driver)


def build_rig(
    catalog: Catalog,
    name: str,
    rack: str,
    profile: str,
    lab_id: str,
    minute_seconds: float = 5.0,
    secrets: LabSecrets | None = None,
) -> RigSpec:
    """Expand one rig profile into a RigSpec. Identities are derived from the lab id and the
    rig name, so a rig keeps its UUIDs, wallet and HiveOS identity across `lab up` runs of
    the same lab, and two labs never share them; `secrets` overrides the derived ones."""
    chosen = secrets or LabSecrets()
    rp = catalog.rigs[profile]
    seed = f"{lab_id}/{name}"
    gpus: list[GpuSpec] = []
    for slot in rp.cards:
        card = catalog.cards[slot.card]
        for _ in range(slot.count):
            i = len(gpus)
            gpus.append(
                GpuSpec(
                    index=i,
                    vendor=card.vendor,
                    model=slot.card,
                    name=card.name,
                    pci_id=card.pci_id,
                    bus_id=f"{i + 1:02x}:00.0",
                    uuid="GPU-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}/gpu{i}")),
                    serial=str(int(_token(f"{seed}/sn{i}", 10), 16))[:13],
                    vram_mib=card.vram_mib,
                    compute_cap=card.compute_cap,
                    gfx=card.gfx,
                    mem_bw_gbs=card.mem_bw_gbs,
                    pcie_gen_max_gpu=card.pcie_max_gen,
                    pcie_gen_max_host=rp.host_pcie_gen,
                    pcie_gen_current=min(slot.link_gen, card.pcie_max_gen, rp.host_pcie_gen),
                    pcie_width_max=card.pcie_max_width,
                    pcie_width_current=min(slot.link_width, card.pcie_max_width),
                    power=card.power,
                    vbios=card.vbios,
                )
            )
    m = MINERS[rp.miner]
    miner = MinerSpec(
        name=rp.miner,
        algo=str(m["algo"]),
        coin=str(m["coin"]),
        api_port=int(m["api_port"]),
        pool_url=f"stratum+tcp://{POOL_HOST}:{POOL_PORT}",
        wallet=chosen.wallet or "0x" + _token(f"{seed}/wallet", 40),
        worker=name,
        password=chosen.pool_password or "x",
    )
    hive = None
    if rp.platform == "hiveos":
        hive = HiveSpec(
            rig_id=int(_token(f"{seed}/rigid", 6), 16) % 9_000_000 + 1_000_000,
            rig_passwd=chosen.rig_passwd or _token(f"{seed}/passwd", 16),
            farm_hash=chosen.farm_hash or _token(f"{seed}/farm", 40),
            hive_host_url=f"http://{HIVE_API_HOST}:{HIVE_API_PORT}/hive",
        )
    return RigSpec(
        name=name,
        rack=rack,
        profile=profile,
        platform=rp.platform,
        driver=rp.driver,
        driver_package=_driver_package(rp),
        miner=miner,
        hive=hive,
        gpus=gpus,
        lab_minute_seconds=minute_seconds,
        ssh_port=rp.ssh_port,
    )


if __name__ == "__main__":  # pragma: no cover - a developer's look at one expanded rig
    import sys

    cat = load_catalog()
    print(build_rig(cat, "rig01", "rack1", sys.argv[1], "dev").model_dump_json(indent=2))
