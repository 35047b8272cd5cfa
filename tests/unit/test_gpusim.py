"""The lab's GPU simulator, on the host: a rig's filesystem under GPUSIM_ROOT, the driver
package's files extracted into it, gpusim.py booting it, then nvidia-smi and unmodified
pynvml (through the compiled libnvidia-ml.so.1) asked what a probe would ask."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.lab import drivers
from toolkit.lab.catalog import build_rig, load_catalog

IMAGE_DIR = Path(drivers.__file__).with_name("image")
OVERLAY = IMAGE_DIR / "overlay"
GPUSIM_FILES = ("gpusim.py", "nvidia-smi", "cuda-watch")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing GPU settings needs root")


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed on this host")


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need("gcc")
    need("dpkg-deb")
    out = tmp_path_factory.mktemp("debs")
    return {deb.name: deb for deb in drivers.build_packages(out, IMAGE_DIR)}


class Rig:
    """One simulated rig's filesystem: overlay's simulator, rig.json, installed driver."""

    def __init__(self, root: Path, debs: dict[str, Path], profile: str) -> None:
        self.root, self.debs = root, debs
        self.env = {**os.environ, "GPUSIM_ROOT": str(root)}
        sim = root / "usr/lib/gpusim"
        sim.mkdir(parents=True)
        for name in GPUSIM_FILES:
            shutil.copy2(OVERLAY / "usr/lib/gpusim" / name, sim / name)
        rig = build_rig(load_catalog(), "rig01", "rack1", profile, "test")
        (root / "etc/lab").mkdir(parents=True)
        (root / "etc/lab/rig.json").write_text(rig.model_dump_json(indent=2))

    def run(
        self, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, env=env or self.env, capture_output=True, text=True, check=False
        )

    def gpusim(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, str(self.root / "usr/lib/gpusim/gpusim.py"), *args)

    def smi(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, str(self.root / "usr/lib/gpusim/nvidia-smi"), *args)

    def install(self, version: str) -> None:
        """dpkg -i as far as the simulator cares: the files, then the postinst's modprobe."""
        deb = self.debs[drivers.driver_deb_name(version)]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(self.root)], check=True)
        self.gpusim("modprobe")

    def boot(self) -> None:
        assert self.gpusim("boot").returncode == 0

    def query(self, fields: str, *extra: str) -> list[list[str]]:
        out = self.smi(f"--query-gpu={fields}", "--format=csv,noheader,nounits", *extra)
        assert out.returncode == 0, out.stdout
        return [line.split(", ") for line in out.stdout.splitlines()]

    def state(self) -> dict[str, str]:
        text = (self.root / "run/gpusim/nvml.state").read_text()
        return dict(
            line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
        )

    def pynvml(self, script: str) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "LD_LIBRARY_PATH": str(self.root / "usr/lib/x86_64-linux-gnu")}
        return self.run(sys.executable, "-c", script, env=env)


def make_rig(tmp_path: Path, debs: dict[str, Path], driver: str | None, profile: str) -> Rig:
    rig = Rig(tmp_path / "rig", debs, profile)
    rig.boot()
    if driver:
        rig.install(driver)
    return rig


@pytest.fixture
def rig(tmp_path: Path, debs: dict[str, Path]) -> Rig:
    """hive-mixed6: 2x RTX 3060 + 2x P106-100 + 2x RX 580 on x1 risers, driver 535."""
    return make_rig(tmp_path, debs, "535.183.01", "hive-mixed6")


# ------------------------------------------------------------------ nvidia-smi


def test_nvidia_smi_lists_only_the_nvidia_cards_with_their_facts(rig: Rig) -> None:
    rows = rig.query("index,name,memory.total,compute_cap,pci.bus_id,pci.device_id,vbios_version")
    assert rows == [
        [
            "0",
            "NVIDIA GeForce RTX 3060",
            "12288",
            "8.6",
            "00000000:01:00.0",
            "0x250410DE",
            "94.06.2F.00.9A",
        ],
        [
            "1",
            "NVIDIA GeForce RTX 3060",
            "12288",
            "8.6",
            "00000000:02:00.0",
            "0x250410DE",
            "94.06.2F.00.9A",
        ],
        ["2", "P106-100", "6144", "6.1", "00000000:03:00.0", "0x1C0710DE", "86.06.58.00.4E"],
        ["3", "P106-100", "6144", "6.1", "00000000:04:00.0", "0x1C0710DE", "86.06.58.00.4E"],
    ]


def test_csv_keeps_units_in_the_header_and_marks_missing_values(rig: Rig) -> None:
    out = rig.smi(
        "-i",
        "0",
        "--query-gpu=gpu_name,memory.used,power.limit,fan.speed,"
        "temperature.memory,serial,clocks.sm",
        "--format=csv",
    )
    assert out.stdout.splitlines() == [
        "name, memory.used [MiB], power.limit [W], fan.speed [%], temperature.memory, serial, "
        "clocks.current.sm [MHz]",
        "NVIDIA GeForce RTX 3060, 300 MiB, 170.00 W, 30 %, [N/A], [N/A], 210 MHz",
    ]
    nounits = rig.smi("-i", "0", "--query-gpu=memory.used,power.limit", "--format=csv,nounits")
    assert nounits.stdout.splitlines() == ["memory.used [MiB], power.limit [W]", "300, 170.00"]


def test_pcie_fields_tell_the_riser_link_from_what_card_and_board_can_do(rig: Rig) -> None:
    fields = (
        "pcie.link.gen.current,pcie.link.gen.gpucurrent,pcie.link.gen.max,pcie.link.gen.gpumax,"
        "pcie.link.gen.hostmax,pcie.link.width.current,pcie.link.width.max"
    )
    rows = rig.query(fields)
    assert rows[0] == ["1", "1", "3", "4", "3", "1", "16"]  # Gen4 card, Gen3 board, x1 riser
    assert rows[2] == ["1", "1", "1", "1", "3", "1", "16"]  # P106-100: Gen1 only


def test_unknown_field_is_refused_like_the_real_tool(rig: Rig) -> None:
    out = rig.smi("--query-gpu=name,vram", "--format=csv")
    assert (out.returncode, out.stdout) == (2, 'Field "vram" is not a valid field to query.\n')


def test_list_gpus(rig: Rig) -> None:
    uuid = rig.state()["3.uuid"]
    assert rig.smi("-L").stdout.splitlines()[3] == f"GPU 3: P106-100 (UUID: {uuid})"


def test_summary_table_has_the_535_layout(rig: Rig) -> None:
    out = rig.smi()
    lines = out.stdout.splitlines()
    assert out.returncode == 0
    assert (
        lines[2]
        == "| NVIDIA-SMI 535.183.01             Driver Version: 535.183.01   CUDA Version: 12.2     |"
    )
    assert lines[8].startswith("|   0  NVIDIA GeForce RTX 3060        Off | 00000000:01:00.0 Off |")
    assert {len(line) for line in lines[1:]} == {89}
    assert "|  No running processes found" in out.stdout


@as_root
def test_power_limit_holds_until_the_next_boot(rig: Rig) -> None:
    out = rig.smi("-i", "0", "-pl", "150")
    assert out.returncode == 0
    assert out.stdout.startswith(
        "Power limit for GPU 00000000:01:00.0 was set to 150.00 W from 170.00 W.\n"
    )
    assert "Warning: persistence mode is disabled on this device." in out.stdout
    assert out.stdout.endswith("All done.\n")
    assert rig.state()["0.power_limit_mw"] == "150000"
    assert rig.query("power.limit,enforced.power.limit,power.default_limit") == [
        ["150.00", "150.00", "170.00"], ["170.00", "170.00", "170.00"],
        ["120.00", "120.00", "120.00"], ["120.00", "120.00", "120.00"],
    ]  # fmt: skip
    assert rig.gpusim("render").returncode == 0  # a re-render keeps settings
    assert rig.query("power.limit", "-i", "0") == [["150.00"]]
    rig.boot()
    assert rig.query("power.limit", "-i", "0") == [["170.00"]]


@as_root
def test_power_limit_outside_the_card_range_is_refused(rig: Rig) -> None:
    out = rig.smi("-i", "2", "-pl", "200")
    assert out.returncode == 2
    assert out.stdout == (
        "Provided power limit 200.00 W is not a valid power limit which should be between "
        "60.00 W and 140.00 W for GPU 00000000:03:00.0\nTerminating early due to previous errors.\n"
    )
    assert rig.state()["2.power_limit_mw"] == "120000"


@as_root
def test_persistence_mode(rig: Rig) -> None:
    out = rig.smi("-i", "1", "-pm", "1")
    assert out.stdout == "Enabled persistence mode for GPU 00000000:02:00.0.\nAll done.\n"
    assert rig.query("persistence_mode") == [["Disabled"], ["Enabled"], ["Disabled"], ["Disabled"]]
    again = rig.smi("-i", "1", "-pm", "1")
    assert (
        again.stdout == "Persistence mode is already Enabled for GPU 00000000:02:00.0.\nAll done.\n"
    )
    rig.boot()
    assert rig.query("persistence_mode", "-i", "1") == [["Disabled"]]


def test_a_compute_process_loads_its_card(rig: Rig) -> None:
    me = os.getpid()
    assert rig.gpusim("attach", str(me), "/hive/miners/t-rex/t-rex", "4500", "1").returncode == 0
    rig.gpusim("attach", "999999999", "dead-miner", "4000", "0")  # a pid that cannot exist
    rows = rig.query("memory.used,power.draw,utilization.gpu,pstate", "-i", "0,1")
    # idle: 10 % of the default limit; a miner: the card's mining draw (profiles.yml)
    assert rows == [["300", "17.00", "0", "P8"], ["4800", "115.00", "100", "P2"]]
    apps = rig.smi("--query-compute-apps=pid,process_name,used_gpu_memory,gpu_uuid", "--format=csv")
    assert apps.stdout.splitlines() == [
        "pid, process_name, used_gpu_memory [MiB], gpu_uuid",
        f"{me}, /hive/miners/t-rex/t-rex, 4500 MiB, {rig.state()['1.uuid']}",
    ]
    assert f"|    1   N/A  N/A{me:>10}      C   /hive/miners/t-rex/t-rex" in rig.smi().stdout


def test_a_card_draws_its_mining_or_inference_wattage_by_what_runs_on_it(rig: Rig) -> None:
    """hive-mixed6's cards: RTX 3060 mines at 115 W and serves at 140 W, P106-100 at 90 and
    100 W (toolkit/lab/profiles.yml); a power limit below caps both; NVML says the same."""
    me = os.getpid()
    rig.gpusim("attach", str(me), "/hive/miners/t-rex/t-rex", "4800", "0", "2")
    with subprocess.Popen(["sleep", "30"]) as engine:
        try:
            rig.gpusim(
                "attach", str(engine.pid), "/opt/rigpivot/llama.cpp/bin/python", "900", "1", "3"
            )
            assert rig.query("power.draw", "-i", "0,1,2,3") == [
                ["115.00"],
                ["140.00"],
                ["90.00"],
                ["100.00"],
            ]
            rig.gpusim("set-power", "1", "136000")  # power_profile's 80 % cap
            rig.gpusim("set-power", "2", "80000")
            assert rig.query("power.draw,utilization.gpu", "-i", "1,2") == [
                ["136.00", "92"],
                ["80.00", "100"],
            ]
            if importlib.util.find_spec("pynvml"):
                out = rig.pynvml(
                    "import pynvml as N\nN.nvmlInit()\nprint([N.nvmlDeviceGetPowerUsage("
                    "N.nvmlDeviceGetHandleByIndex(i)) for i in range(4)])\n"
                )
                assert out.stdout.strip() == "[115000, 136000, 80000, 100000]", out.stderr
            # a miner left beside the engine: the card is mining
            rig.gpusim("attach", str(me), "lolMiner", "4800", "3")
            assert rig.query("power.draw", "-i", "3") == [["90.00"]]
        finally:
            engine.kill()


def test_an_inference_engine_rigpivot_started_holds_its_card(rig: Rig, tmp_path: Path) -> None:
    """The lab's engines run on the CPU: cuda-watch registers each rigpivot instance (found by
    the settings systemd gives it) on its card, as a CUDA context would, and forgets it once
    it is gone."""
    model = tmp_path / "model.gguf"
    model.write_bytes(b"\0" * (3 << 20))
    env = {
        "RIGPIVOT_ENGINE": "llama.cpp",
        "CUDA_VISIBLE_DEVICES": "1",
        "RIGPIVOT_MODEL": str(model),
    }
    watch = (
        "import importlib.machinery, types, sys\n"
        f"l = importlib.machinery.SourceFileLoader('w', {str(rig.root / 'usr/lib/gpusim/cuda-watch')!r})\n"
        "m = types.ModuleType('w'); m.__file__ = l.path; l.exec_module(m); m.step()\n"
    )
    # As on a lab rig: the engine runs as its own user, and the watcher as a container's root,
    # without CAP_SYS_PTRACE (when these tests can switch users and drop capabilities).
    user, root = [], []
    if os.geteuid() == 0 and shutil.which("setpriv"):
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        root = ["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace"]
    with subprocess.Popen([*user, "sleep", "30"], env={**os.environ, **env}) as engine:
        try:
            assert rig.run(*root, sys.executable, "-c", watch).returncode == 0
            rows = rig.query("memory.used,power.draw", "-i", "1")
            assert rows == [["815", "140.00"]]  # 300 reserved + 3 MiB model + 512 MiB context
            apps = rig.smi("--query-compute-apps=pid,process_name", "--format=csv,noheader")
            assert apps.stdout.splitlines() == [f"{engine.pid}, sleep"]
        finally:
            engine.kill()
    assert rig.run(sys.executable, "-c", watch).returncode == 0
    assert not (rig.root / "run/gpusim/apps" / str(engine.pid)).exists()
    assert rig.query("power.draw", "-i", "1") == [["17.00"]]


def test_the_simulators_list_of_miners_is_the_same_in_nvidia_smi_and_nvml() -> None:
    sys.path.insert(0, str(OVERLAY / "usr/lib/gpusim"))
    try:
        import gpusim  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    c = (IMAGE_DIR / "libnvidia-ml" / "nvml_shim.c").read_text()
    block = c[c.index("MINER_PROGRAMS[] = {") : c.index("};", c.index("MINER_PROGRAMS[] = {"))]
    assert tuple(re.findall(r'"([^"]+)"', block)) == gpusim.MINER_PROGRAMS


# ------------------------------------------------------------------ driver lifecycle


def test_470_nvidia_smi_predates_compute_cap_and_the_new_pcie_fields(
    tmp_path: Path, debs: dict[str, Path]
) -> None:
    rig = make_rig(tmp_path, debs, "470.256.02", "hive-p106x8")
    out = rig.smi("--query-gpu=name,compute_cap", "--format=csv")
    assert (out.returncode, out.stdout) == (
        2,
        'Field "compute_cap" is not a valid field to query.\n',
    )
    assert rig.smi("--query-gpu=pcie.link.gen.gpucurrent", "--format=csv").returncode == 2
    assert rig.query("name,pcie.link.gen.current,driver_version")[0] == [
        "P106-100",
        "1",
        "470.256.02",
    ]
    table = rig.smi().stdout.splitlines()
    assert (
        table[2]
        == "| NVIDIA-SMI 470.256.02   Driver Version: 470.256.02   CUDA Version: 11.4     |"
    )
    assert {len(line) for line in table[1:]} == {79}


def test_without_a_loaded_module_tools_cannot_reach_the_driver(
    tmp_path: Path, debs: dict[str, Path]
) -> None:
    rig = make_rig(tmp_path, debs, "550.127.05", "linux-3090x2")
    assert rig.gpusim("rmmod").returncode == 0
    out = rig.smi()
    assert out.returncode == 9
    assert out.stdout == (
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
        "Make sure that the latest NVIDIA driver is installed and running.\n\n"
    )
    nvml = rig.pynvml(
        "import pynvml\ntry:\n pynvml.nvmlInit()\nexcept pynvml.NVMLError as e:\n print(type(e).__name__, e)"
    )
    assert nvml.stdout.strip() == "NVMLError_DriverNotLoaded Driver Not Loaded"


def test_driverless_rig_loads_the_first_driver_at_install(
    tmp_path: Path, debs: dict[str, Path]
) -> None:
    rig = make_rig(tmp_path, debs, None, "hive-3060x6")
    assert not (rig.root / "run/gpusim/module-version").exists()
    rig.install("535.183.01")
    assert rig.query("count")[0] == ["6"]


def test_upgrade_without_reboot_is_a_version_mismatch_until_boot(rig: Rig) -> None:
    rig.install("535.216.01")  # postinst's modprobe: the 535.183.01 module stays loaded
    out = rig.smi("--query-gpu=name", "--format=csv")
    assert out.returncode == 18
    assert (
        out.stdout
        == "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 535.216\n"
    )
    nvml = rig.pynvml(
        "import pynvml\ntry:\n pynvml.nvmlInit()\nexcept pynvml.NVMLError as e:\n print(type(e).__name__, e)"
    )
    assert (
        nvml.stdout.strip()
        == "NVMLError_LibRmVersionMismatch RM has detected an NVML/RM version mismatch."
    )
    rig.boot()
    assert rig.query("driver_version")[0] == ["535.216.01"]


def test_an_amd_only_rig_has_no_nvidia_device(tmp_path: Path, debs: dict[str, Path]) -> None:
    rig = make_rig(tmp_path, debs, None, "hive-rx580x6")
    rig.install("535.183.01")
    assert "No such device" in rig.gpusim("modprobe").stderr
    assert rig.smi("-L").returncode == 9


# ------------------------------------------------------------------ pynvml, unmodified

PYNVML_FACTS = """
import json, pynvml as N
N.nvmlInit()
gpus = []
for i in range(N.nvmlDeviceGetCount()):
    h = N.nvmlDeviceGetHandleByIndex(i)
    mem = N.nvmlDeviceGetMemoryInfo(h)
    lo, hi = N.nvmlDeviceGetPowerManagementLimitConstraints(h)
    gpus.append({
        "name": N.nvmlDeviceGetName(h), "uuid": N.nvmlDeviceGetUUID(h),
        "bus_id": N.nvmlDeviceGetPciInfo(h).busId, "total_mib": mem.total // 2**20,
        "used_mib": mem.used // 2**20, "cc": "%d.%d" % N.nvmlDeviceGetCudaComputeCapability(h),
        "gen": N.nvmlDeviceGetCurrPcieLinkGeneration(h),
        "gen_max": N.nvmlDeviceGetMaxPcieLinkGeneration(h),
        "width": N.nvmlDeviceGetCurrPcieLinkWidth(h),
        "width_max": N.nvmlDeviceGetMaxPcieLinkWidth(h),
        "limit_w": N.nvmlDeviceGetPowerManagementLimit(h) / 1000,
        "default_w": N.nvmlDeviceGetPowerManagementDefaultLimit(h) / 1000,
        "min_w": lo / 1000, "max_w": hi / 1000,
        "draw_w": N.nvmlDeviceGetPowerUsage(h) / 1000,
        "temp": N.nvmlDeviceGetTemperature(h, N.NVML_TEMPERATURE_GPU),
        "procs": [(p.pid, p.usedGpuMemory // 2**20) for p in N.nvmlDeviceGetComputeRunningProcesses_v2(h)],
    })
print(json.dumps({"driver": N.nvmlSystemGetDriverVersion(), "cuda": N.nvmlSystemGetCudaDriverVersion(),
                  "gpus": gpus}))
"""
SMI_FIELDS = (
    "name,uuid,pci.bus_id,memory.total,memory.used,compute_cap,pcie.link.gen.current,pcie.link.gen.max,"
    "pcie.link.width.current,pcie.link.width.max,power.limit,power.default_limit,power.min_limit,"
    "power.max_limit,power.draw,temperature.gpu"
)


def test_pynvml_and_nvidia_smi_tell_the_same_facts(rig: Rig) -> None:
    pytest.importorskip("pynvml")
    rig.gpusim("attach", str(os.getpid()), "llama-server", "5000", "2")
    out = rig.pynvml(PYNVML_FACTS)
    assert out.returncode == 0, out.stderr
    nvml = json.loads(out.stdout)
    assert (nvml["driver"], nvml["cuda"]) == ("535.183.01", 12020)
    smi = [
        {
            "name": r[0], "uuid": r[1], "bus_id": r[2], "total_mib": int(r[3]), "used_mib": int(r[4]),
            "cc": r[5], "gen": int(r[6]), "gen_max": int(r[7]), "width": int(r[8]),
            "width_max": int(r[9]), "limit_w": float(r[10]), "default_w": float(r[11]),
            "min_w": float(r[12]), "max_w": float(r[13]), "draw_w": float(r[14]), "temp": int(r[15]),
        }
        for r in rig.query(SMI_FIELDS)
    ]  # fmt: skip
    assert [{k: v for k, v in g.items() if k != "procs"} for g in nvml["gpus"]] == smi
    assert [g["procs"] for g in nvml["gpus"]] == [[], [], [[os.getpid(), 5000]], []]


@as_root
def test_pynvml_sets_the_power_limit_nvidia_smi_then_reports(rig: Rig) -> None:
    pytest.importorskip("pynvml")
    script = (
        "import pynvml as N\nN.nvmlInit()\nh = N.nvmlDeviceGetHandleByIndex(3)\n"
        "try:\n N.nvmlDeviceSetPowerManagementLimit(h, 20000)\nexcept N.NVMLError as e:\n print(e)\n"
        "N.nvmlDeviceSetPowerManagementLimit(h, 90000)\n"
    )
    out = rig.pynvml(script)
    assert (out.returncode, out.stdout) == (0, "Invalid Argument\n"), out.stderr
    assert rig.query("power.limit", "-i", "3") == [["90.00"]]


def test_470_library_lacks_the_entry_points_newer_drivers_added(
    tmp_path: Path, debs: dict[str, Path]
) -> None:
    pytest.importorskip("pynvml")
    rig = make_rig(tmp_path, debs, "470.256.02", "hive-p106x8")
    script = (
        "import pynvml as N\nN.nvmlInit()\nh = N.nvmlDeviceGetHandleByIndex(0)\n"
        "print(N.nvmlSystemGetCudaDriverVersion(), N.nvmlDeviceGetMaxPcieLinkGeneration(h))\n"
        "for f in (N.nvmlDeviceGetGpuMaxPcieLinkGeneration, N.nvmlDeviceGetComputeRunningProcesses):\n"
        " try:\n  f(h)\n except Exception as e:\n  print(type(e).__name__)\n"
    )
    out = rig.pynvml(script)
    assert out.stdout.splitlines() == [
        "11040 1",
        "NVMLError_FunctionNotFound",
        "NVMLLibraryMismatchError",
    ]


# ------------------------------------------------------------------ lspci and packages


def test_lspci_shows_every_card_with_pci_ids_names(rig: Rig) -> None:
    need("lspci")
    dump = str(rig.root / "run/gpusim/pci.dump")
    listing = rig.run("lspci", "-F", dump, "-nn").stdout
    assert (
        "01:00.0 VGA compatible controller [0300]: NVIDIA Corporation GA106 [GeForce RTX 3060 Lite Hash Rate] [10de:2504]"
        in listing
    )
    assert (
        "03:00.0 3D controller [0302]: NVIDIA Corporation GP106 [P106-100] [10de:1c07]" in listing
    )
    assert (
        "05:00.0 VGA compatible controller [0300]: Advanced Micro Devices, Inc. [AMD/ATI] Ellesmere [Radeon RX 470/480/570/570X/580/580X/590] [1002:67df]"
        in listing
    )
    nvidia = rig.run("lspci", "-F", dump, "-d", "10de:").stdout.splitlines()
    assert len(nvidia) == 6  # four GPUs and the two RTX 3060s' HDMI audio functions
    link = rig.run("lspci", "-F", dump, "-vv", "-s", "01:00.0").stdout
    assert "LnkSta:\tSpeed 2.5GT/s (downgraded), Width x1 (downgraded)" in link


def test_driver_packages_declare_one_driver_at_a_time(debs: dict[str, Path]) -> None:
    def field(deb: str, name: str) -> str:
        return subprocess.run(["dpkg-deb", "-f", str(debs[deb]), name], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip

    deb = drivers.driver_deb_name("550.127.05")
    assert field(deb, "Provides") == "nvidia-driver (= 550.127.05)"
    assert field(deb, "Conflicts") == field(deb, "Replaces") == "nvidia-driver"
    # Debian's own package is the real `nvidia-driver`, which NVIDIA's packages replace
    debian = drivers.driver_deb_name("535.183.01", "nvidia-driver")
    assert (field(debian, "Package"), field(debian, "Version")) == (
        "nvidia-driver", "535.183.01-1lab",
    )  # fmt: skip
    assert field(debian, "Provides") == field(debian, "Conflicts") == ""
    files = subprocess.run(
        ["dpkg-deb", "-c", str(debs[deb])], capture_output=True, text=True
    ).stdout
    for path in ("./usr/bin/nvidia-smi", "./usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.127.05",
                 "./usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1 -> libnvidia-ml.so.550.127.05",
                 "./usr/lib/gpusim/driver-version"):  # fmt: skip
        assert path in files
    cuda = "cuda-toolkit-12-4_12.4.1-1lab_amd64.deb"
    assert (
        field(cuda, "Depends") == "nvidia-driver-550 (>= 550.54.15) | nvidia-driver (>= 550.54.15)"
    )
    assert drivers.cache_key(IMAGE_DIR) == drivers.cache_key(IMAGE_DIR)
