"""The replay backend plays a zarr dataset back: writes advance one recorded step, reads return it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.hal.backend import make_backend
from robopolicy.hal.spec import BackendSpec, load_hardware
from robopolicy.specs import ConfigError


@pytest.fixture()
def dataset(tmp_path):
    path = tmp_path / "rec.zarr"
    rng = np.random.default_rng(0)
    with ReplayBuffer.create(path) as buffer:
        for length in (3, 2):
            buffer.add_episode({"joint_pos": rng.normal(size=(length, 7)),
                                "agentview_image": rng.integers(0, 255, (length, 8, 8, 3), dtype=np.uint8),
                                "object": rng.normal(size=(length, 4)).astype(np.float32),
                                "action": rng.normal(size=(length, 7))})
    return path


def replay_spec(dataset, **settings):
    spec = load_hardware("panda_sim")
    return dataclasses.replace(spec, backend=BackendSpec("replay", {"dataset": str(dataset), **settings}))


def test_replay_plays_the_recorded_steps(dataset):
    with ReplayBuffer.open(dataset) as buffer:
        first, second = buffer.get_episode(0), buffer.get_episode(1)
    backend = make_backend(replay_spec(dataset, position_key="joint_pos", loop=True))
    backend.connect()
    backend.arm()
    for step in range(3):
        obs = backend.read()
        np.testing.assert_allclose(obs.position, first["joint_pos"][step])
        np.testing.assert_array_equal(obs.images["agentview"], first["agentview_image"][step])
        assert set(obs.extras) == {"object", "joint_pos"} and "images/agentview" in obs.stamps
        backend.write(np.array(backend.spec.home))
    np.testing.assert_allclose(backend.read().position, second["joint_pos"][0])  # looped into episode 1
    written, recorded = backend.commands[0]
    np.testing.assert_allclose(recorded, first["action"][0])
    np.testing.assert_allclose(written, backend.spec.home)
    backend.close()


def test_replay_holds_the_last_step_and_names_missing_keys(dataset):
    backend = make_backend(replay_spec(dataset, episode=1))
    backend.connect()
    backend.arm()
    for _ in range(5):
        backend.write(np.array(backend.spec.home))
    assert backend.episode == 1 and backend.step == 1
    np.testing.assert_allclose(backend.read().position, backend.spec.home)  # no joint key: the home pose
    backend.close()
    with pytest.raises(ConfigError, match="backend.settings.dataset"):
        make_backend(replay_spec(""))
    broken = make_backend(replay_spec(dataset, position_key="nope"))
    with pytest.raises(ConfigError, match="'nope' is not in"):
        broken.connect()
