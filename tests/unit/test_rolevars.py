"""Role variables named `*_networks` (net_hardening's admin and inference networks) are CIDR
lists: a bad one in a farm file stops the run before any rig is touched, naming the file, the
line, the host, the variable, the bad value and what to write instead."""

from pathlib import Path

import pytest

from toolkit.errors import BadInputError
from toolkit.inventory import load_inventory
from toolkit.rolevars import check_role_vars


def hosts(tmp_path: Path, text: str, name: str = "farm.ini"):
    path = tmp_path / name
    path.write_text(text)
    return load_inventory(path).hosts


def test_valid_networks_pass(tmp_path):
    farm = hosts(
        tmp_path,
        '[r]\nrig01\nrig02 net_hardening_inference_allowed_networks=\'["fd00::/8", "10.1.2.3"]\'\n'
        "[all:vars]\n"
        'net_hardening_admin_networks=["10.89.0.1/32","192.168.0.0/16"]\n'
        'net_hardening_inference_allowed_networks=["10.89.0.0/24"]\n',
    )
    for host in farm.values():
        check_role_vars(host)


def test_a_bad_cidr_in_a_group_names_file_line_host_variable_value_and_the_fix(tmp_path):
    farm = hosts(
        tmp_path, '[r]\nrig01\n[all:vars]\nnet_hardening_admin_networks=["10.89.0.300/32"]\n'
    )
    with pytest.raises(BadInputError) as e:
        check_role_vars(farm["rig01"])
    msg = str(e.value)
    assert "farm.ini:4: net_hardening_admin_networks (host rig01)" in msg
    assert "'10.89.0.300/32', which is not a CIDR network" in msg
    assert "write an address as 192.0.2.10/32 and a network as 10.20.0.0/24" in msg


def test_a_bad_cidr_on_a_host_line_names_that_host_and_line(tmp_path):
    farm = hosts(
        tmp_path,
        "[r]\nrig01\nrig02 net_hardening_inference_allowed_networks='[\"lab-net\"]'\n",
    )
    check_role_vars(farm["rig01"])
    with pytest.raises(
        BadInputError,
        match=r"farm.ini:3: net_hardening_inference_allowed_networks \(host rig02\) "
        r"has 'lab-net', which is not a CIDR network",
    ):
        check_role_vars(farm["rig02"])


@pytest.mark.parametrize("value", ["10.0.0.0/33", "10.0.0/8x", "''", "300.1.1.1"])
def test_malformed_networks_are_refused(tmp_path, value):
    farm = hosts(tmp_path, f"[r]\nrig01 net_hardening_admin_networks='[\"{value}\"]'\n")
    with pytest.raises(BadInputError, match="is not a CIDR network"):
        check_role_vars(farm["rig01"])


def test_a_network_list_given_as_a_plain_string_is_refused(tmp_path):
    farm = hosts(tmp_path, "[r]\nrig01 net_hardening_admin_networks=10.89.0.1/32\n")
    with pytest.raises(
        BadInputError, match=r"net_hardening_admin_networks \(host rig01\) must be list"
    ):
        check_role_vars(farm["rig01"])


def test_a_bad_cidr_in_group_vars_yaml_names_that_file(tmp_path):
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(
        "net_hardening_admin_networks:\n  - 10.89.0.1/32\n  - 10.89.0.0/240\n"
    )
    farm = hosts(tmp_path, "[r]\nrig01\n")
    with pytest.raises(BadInputError) as e:
        check_role_vars(farm["rig01"])
    assert "all.yml" in str(e.value)
    assert "'10.89.0.0/240', which is not a CIDR network" in str(e.value)


def test_templated_networks_are_left_to_ansible(tmp_path):
    farm = hosts(
        tmp_path,
        "[r]\nrig01 net_hardening_admin_networks='[\"{{ admin_net }}\"]'\n",
    )
    check_role_vars(farm["rig01"])


def test_convert_refuses_rigs_without_admin_networks_before_touching_them(tmp_path):
    from toolkit.rolevars import check_convert_vars

    farm = hosts(
        tmp_path,
        "[r]\nrig01\nrig02 net_hardening_admin_networks='[\"10.89.0.1/32\"]'\nrig03\n",
    )
    check_convert_vars([farm["rig02"]])
    with pytest.raises(
        BadInputError, match=r"net_hardening_admin_networks is not set for rig01, rig03: "
    ):
        check_convert_vars(list(farm.values()))


def test_a_bool_is_checked_as_ansible_reads_it(tmp_path):
    """`false` in an INI file is the string "false" to Ansible: its argument check lets it
    through, but a role's `when: not mining_restore_skip_reboot` takes it as true."""
    farm = hosts(
        tmp_path,
        "[r]\nrig01 mining_restore_skip_reboot=False\nrig02 mining_restore_skip_reboot=false\n",
    )
    check_role_vars(farm["rig01"])
    with pytest.raises(
        BadInputError,
        match=r"farm.ini:3: mining_restore_skip_reboot \(host rig02\) must be bool, got 'false'; "
        r".*in an INI file write mining_restore_skip_reboot=False",
    ):
        check_role_vars(farm["rig02"])


def test_a_quoted_bool_in_group_vars_yaml_names_that_file_and_the_yaml_fix(tmp_path):
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text('nvidia_driver_skip_reboot: "true"\n')
    farm = hosts(tmp_path, "[r]\nrig01\n")
    with pytest.raises(BadInputError) as e:
        check_role_vars(farm["rig01"])
    assert "all.yml:1: nvidia_driver_skip_reboot (host rig01) must be bool" in str(e.value)
    assert "write nvidia_driver_skip_reboot: true" in str(e.value)


def test_a_network_list_ansible_reads_as_a_string_says_how_to_quote_it(tmp_path):
    farm = hosts(
        tmp_path,
        "[r]\nrig01 net_hardening_admin_networks=[10.20.0.5/32,10.20.9.0/24]\n"
        "[all:vars]\nnet_hardening_inference_allowed_networks=[10.30.0.0/16]\n",
    )
    with pytest.raises(BadInputError) as e:
        check_role_vars(farm["rig01"])
    msg = str(e.value)
    assert (
        "farm.ini:2: net_hardening_admin_networks (host rig01) must be list, got "
        "'[10.20.0.5/32,10.20.9.0/24]'; Ansible reads it as a string, not a list: on a host "
        """line write net_hardening_admin_networks='["10.20.0.5/32","10.20.9.0/24"]'"""
    ) in msg
    assert ("farm.ini:4: net_hardening_inference_allowed_networks (host rig01) must be list") in msg
    assert (
        'under [group:vars] write net_hardening_inference_allowed_networks=["10.30.0.0/16"]' in msg
    )
