"""Hardware files: every shipped one validates; a bad value is a ConfigError naming the file and the key, and
`robopolicy hardware check` turns it into exit code 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from robopolicy.cli import main
from robopolicy.hal.spec import HARDWARE_DIR, list_hardware, load_hardware
from robopolicy.specs import ConfigError

PANDA = (HARDWARE_DIR / "panda.toml").read_text()


def test_shipped_hardware_files_validate():
    names = list_hardware()
    assert {"panda", "panda_sim", "ur5e", "ur5e_sim"} <= set(names)
    for name in names:
        spec = load_hardware(name)
        assert Path(spec.mjcf).is_file() and spec.path.endswith(f"{name}.toml")
        assert len(spec.limits.jerk) == spec.n_joints and spec.period_s == pytest.approx(1 / spec.control_rate_hz)
    panda = load_hardware("panda")
    assert panda.limits.velocity == (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)  # Franka's dq_max
    assert panda.limits.torque == (87.0,) * 4 + (12.0,) * 3
    assert load_hardware("ur5e").limits.torque == (150.0,) * 3 + (28.0,) * 3


@pytest.mark.parametrize(("old", "new", "key"), [
    ("velocity = [2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100]", "velocity = [2.1750]", "limits.velocity"),
    ("jerk = [7500.0,", "jerk = [-7500.0,", "limits.jerk"),
    ('control_mode = "joint_position"', 'control_mode = "torque"', "control_mode"),
    ("control_rate_hz = 20.0", "control_rate_hz = 0.0", "control_rate_hz"),
    ('name = "remote"', 'name = ""', "backend.name"),
    ('mjcf = "robosuite:robots/panda/robot.xml"', 'mjcf = "robosuite:robots/nope.xml"', "mjcf"),
    ("home = [0.0,", "home = [9.0,", "home"),
    ("lower = [0.20, -0.50, 0.05]", "lower = [0.90, -0.50, 0.05]", "workspace.upper"),
    ('torque = "Nm"', 'torque = "Ncm"', "units.torque"),
    ("simulated = false", "simulated = false\nbogus = 1", "bogus"),
    ("simulated = false", 'simulated = false\ntask = "lift"', "task"),
])
def test_bad_values_name_the_file_and_the_key(tmp_path, old, new, key):
    assert old in PANDA
    path = tmp_path / "bad.toml"
    path.write_text(PANDA.replace(old, new, 1))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {key}")):
        load_hardware(path)


def test_cli_lists_checks_and_exits_2_on_a_bad_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ROBOPOLICY_HAL_KEY", raising=False)
    assert main(["hardware", "list"]) == 0
    assert "panda_sim" in capsys.readouterr().out
    assert main(["hardware", "check", "panda"]) == 0
    out = capsys.readouterr().out
    assert "velocity [2.175" in out and out.strip().endswith("ok")
    bad = tmp_path / "bad.toml"
    bad.write_text(PANDA.replace("torque = [87.0,", "torque = [87.0, 1.0,"))
    assert main(["hardware", "check", str(bad)]) == 2
    assert "limits.torque: expected 7 values" in capsys.readouterr().err
    assert main(["hardware", "check", "no_such_robot"]) == 2
    assert main(["hardware", "serve", "panda_sim", "--backend", "mock", "--port", "0"]) == 2  # no key
    assert "no key" in capsys.readouterr().err
