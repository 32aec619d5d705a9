"""The shield's margins come from the hardware file's ``[shield]`` table (measured for that robot's controller),
a command-line flag overrides them, and a bad value is a ConfigError naming the file and the key."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest

from robopolicy.cli import main
from robopolicy.hal.options import add_shield_arguments, shield_options
from robopolicy.hal.shield.hardware import ShieldOptions, build_shield, margins
from robopolicy.hal.spec import HARDWARE_DIR, ShieldSettings, load_hardware
from robopolicy.specs import ConfigError

PANDA = (HARDWARE_DIR / "panda.toml").read_text()  # the real arm's file: no [shield] table


def test_simulated_arms_ship_measured_margins_and_the_shield_uses_them():
    for name in ("panda_sim", "ur5e_sim", "panda_lift_sim"):
        assert load_hardware(name).shield.source, f"{name}: [shield] says how its margins were measured"
    spec = load_hardware("panda_sim")
    rate, ws = spec.shield.rate_margin, spec.shield.workspace_margin
    assert (rate, ws) != (ShieldSettings().rate_margin, ShieldSettings().workspace_margin)
    shield = build_shield(spec)
    np.testing.assert_allclose(shield.limits.velocity, np.array(spec.limits.velocity) * (1 - rate))
    assert shield.shadow.min_distance == spec.shield.min_distance > 0
    np.testing.assert_allclose(shield.config.workspace.lower, np.array(spec.workspace.lower) + ws)
    np.testing.assert_allclose(shield.config.hard_workspace.upper, spec.workspace.upper)


def test_a_file_without_a_shield_table_gets_the_defaults_and_options_override_the_file(tmp_path):
    real = load_hardware("panda")
    assert real.shield == ShieldSettings() and margins(real, ShieldOptions()) == (0.1, 0.03, 0.0)
    path = tmp_path / "measured.toml"
    path.write_text(f"{PANDA}\n[shield]\nrate_margin = 0.25\n")
    assert margins(load_hardware(path), ShieldOptions()) == (0.25, 0.03, 0.0)
    sim = load_hardware("panda_sim")
    assert margins(sim, ShieldOptions(rate_margin=0.2, workspace_margin=0.0, min_distance=0.0)) == (0.2, 0.0, 0.0)
    shield = build_shield(sim, ShieldOptions(collision=False, rate_margin=0.0))
    np.testing.assert_allclose(shield.limits.velocity, sim.limits.velocity)


@pytest.mark.parametrize(("line", "key"), [
    ("rate_margin = 1.0", "shield.rate_margin"),
    ("rate_margin = -0.1", "shield.rate_margin"),
    ("rate_margin = nan", "shield.rate_margin"),
    ("workspace_margin = -0.01", "shield.workspace_margin"),
    ("workspace_margin = 0.5", "shield.workspace_margin"),  # more than half the box's 0.6 m side
    ("min_distance = -0.01", "shield.min_distance"),
    ('rate_margin = "high"', "shield.rate_margin"),
    ("velocity_margin = 0.2", "shield.velocity_margin"),
])
def test_bad_shield_settings_name_the_file_and_the_key(tmp_path, line, key):
    assert "[shield]" not in PANDA
    path = tmp_path / "bad.toml"
    path.write_text(f"{PANDA}\n[shield]\n{line}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {key}")):
        load_hardware(path)
    assert main(["hardware", "check", str(path)]) == 2


def test_cli_flags_set_each_shield_option_once(capsys):
    parser = argparse.ArgumentParser()
    add_shield_arguments(parser)
    default = shield_options(parser.parse_args([]))
    assert (default.rate_margin, default.workspace_margin, default.min_distance, default.servo) == (None, None, None,
                                                                                                     True)
    options = shield_options(parser.parse_args(["--rate-margin", "0.3", "--workspace-margin", "0.06", "--min-distance",
                                                "0.02", "--no-servo", "--servo-margin", "0.002"]))
    assert (options.rate_margin, options.workspace_margin, options.min_distance) == (0.3, 0.06, 0.02)
    assert (options.servo, options.servo_margin) == (False, 0.002)
    with pytest.raises(ConfigError, match="workspace_margin"):
        build_shield(load_hardware("panda_sim"), ShieldOptions(workspace_margin=-0.01))
    assert main(["hardware", "check", "panda_sim"]) == 0
    assert "shield: rate_margin" in capsys.readouterr().out
