"""The farm file: read as Ansible reads it; every mistake named with file and line."""

from pathlib import Path

import pytest

from toolkit.errors import BadInputError
from toolkit.inventory import load_inventory
from toolkit.policy import policy_for

FARM = """\
# two racks
[rack1]
rig[01:03] ansible_host=10.0.1.1
rig04 ansible_host=10.0.1.4 rigpivot_min_context=8192

[rack2]
big ansible_host=10.0.2.1 ansible_port=2222

[farm:children]
rack1
rack2

[rack1:vars]
rigpivot_engine=llama.cpp

[farm:vars]
ansible_user=root
rigpivot_engine=vllm
"""


def write(tmp_path: Path, text: str, name: str = "farm.ini") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_ranges_groups_and_vars_resolve_like_ansible(tmp_path):
    inv = load_inventory(write(tmp_path, FARM))
    assert list(inv.hosts) == ["rig01", "rig02", "rig03", "rig04", "big"]
    assert inv.groups["farm"] == ["rig01", "rig02", "rig03", "rig04", "big"]
    assert inv.hosts["big"].port == 2222 and inv.hosts["rig02"].address == "10.0.1.1"
    # the deeper group (rack1) wins over its parent (farm); host vars win over both
    assert inv.hosts["rig01"].vars["rigpivot_engine"] == "llama.cpp"
    assert inv.hosts["big"].vars["rigpivot_engine"] == "vllm"
    assert policy_for(inv.hosts["rig04"]).min_context == 8192


def test_group_vars_directory_layers_under_inventory_vars(tmp_path):
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "rack2.yml").write_text("rigpivot_min_context: 2048\n")
    inv = load_inventory(write(tmp_path, FARM))
    assert policy_for(inv.hosts["big"]).min_context == 2048


def test_limit_selects_hosts_and_groups_and_refuses_nothing(tmp_path):
    inv = load_inventory(write(tmp_path, FARM))
    assert [h.name for h in inv.select("rack2,rig01")] == ["big", "rig01"]
    assert [h.name for h in inv.select("farm:!rack1")] == ["big"]
    assert [h.name for h in inv.select("rig0*")] == ["rig01", "rig02", "rig03", "rig04"]
    with pytest.raises(BadInputError, match="--limit 'rig99' matches no host"):
        inv.select("rig99")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[rack1\nrig01\n", r"farm.ini:1: cannot read section header"),
        ("[rack1]\nrig01 ansible_host\n", r"farm.ini:2: expected key=value, found 'ansible_host'"),
        (
            "[rack1]\nrig01 a=1\nrig01 a=2\n",
            r"farm.ini:3: host rig01 is listed again \(first at .*farm.ini:2\)",
        ),
        ("[r:children]\nnope\n[x]\nh\n", r"group 'r' lists unknown child group 'nope'"),
        ("[rack1]\nrig[05:01]\n", r"farm.ini:2: host range \[05:01\] runs backwards"),
        ("# empty\n", r"lists no hosts"),
    ],
)
def test_garbled_inventory_is_named_with_file_and_line(tmp_path, text, message):
    with pytest.raises(BadInputError, match=message):
        load_inventory(write(tmp_path, text))


def test_missing_inventory(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        load_inventory(tmp_path / "nope.ini")


def test_unknown_policy_variable_names_file_line_host_and_a_suggestion(tmp_path):
    inv = load_inventory(write(tmp_path, "[r]\nrig01 rigpivot_min_contex=2048\n"))
    with pytest.raises(
        BadInputError,
        match=r"farm.ini:2: unknown variable rigpivot_min_contex "
        r"for host rig01; did you mean rigpivot_min_context\?",
    ):
        policy_for(inv.hosts["rig01"])


def test_bad_policy_value_names_where_it_was_set(tmp_path):
    inv = load_inventory(
        write(tmp_path, "[r]\nrig01\n[r:vars]\nrigpivot_gpu_memory_utilization=1.5\n")
    )
    with pytest.raises(
        BadInputError, match=r"farm.ini:4: rigpivot_gpu_memory_utilization for host rig01"
    ):
        policy_for(inv.hosts["rig01"])


def test_model_not_in_catalog_is_refused_with_a_suggestion(tmp_path):
    inv = load_inventory(write(tmp_path, "[r]\nrig01 rigpivot_target_models='[\"qwen2.5-15b\"]'\n"))
    with pytest.raises(
        BadInputError, match=r"model 'qwen2.5-15b' is not in the model catalog \(did you mean"
    ):
        policy_for(inv.hosts["rig01"])


def test_misspelt_role_variable_is_refused_with_a_suggestion(tmp_path):
    from toolkit.rolevars import check_role_vars

    inv = load_inventory(write(tmp_path, "[r]\nrig01 inference_server_engin=vllm\n"))
    with pytest.raises(
        BadInputError,
        match=r"farm.ini:2: inference_server_engin \(host rig01\) "
        r"is not a variable of role inference_server; did you mean inference_server_engine\?",
    ):
        check_role_vars(inv.hosts["rig01"])


def test_role_variable_of_the_wrong_type_or_choice_is_refused(tmp_path):
    from toolkit.rolevars import check_role_vars

    inv = load_inventory(
        write(
            tmp_path,
            "[r]\nrig01 inference_server_base_port=eight\nrig02 inference_server_engine=tgi\n",
        )
    )
    with pytest.raises(
        BadInputError, match=r"inference_server_base_port \(host rig01\) must be int"
    ):
        check_role_vars(inv.hosts["rig01"])
    with pytest.raises(
        BadInputError, match=r"inference_server_engine \(host rig02\) must be one of"
    ):
        check_role_vars(inv.hosts["rig02"])


def test_limit_at_file_takes_one_host_per_line_as_ansible_does(tmp_path):
    inv = tmp_path / "farm.ini"
    inv.write_text(FARM)
    hosts = tmp_path / "convert.hosts"
    hosts.write_text("rig02\n\n# chosen by advise\nbig\n")
    farm = load_inventory(inv)
    assert [h.name for h in farm.select(f"@{hosts}")] == ["rig02", "big"]
    assert [h.name for h in farm.select(f"@{hosts},!big")] == ["rig02"]
    hosts.write_text("")
    with pytest.raises(BadInputError, match="lists no host"):
        farm.select(f"@{hosts}")
    with pytest.raises(BadInputError, match="cannot read"):
        farm.select(f"@{tmp_path / 'none.hosts'}")


def test_a_farm_file_named_by_a_relative_path_is_read(tmp_path: Path, monkeypatch):
    """`rigpivot preflight -i inventories/lab/farm.ini`, as the README and `make demo` run it."""
    (tmp_path / "farm.ini").write_text("[rack1]\nrig01 ansible_host=10.0.0.1\n")
    monkeypatch.chdir(tmp_path)
    inv = load_inventory(Path("farm.ini"))
    assert list(inv.hosts) == ["rig01"] and inv.hosts["rig01"].vars["ansible_host"] == "10.0.0.1"
