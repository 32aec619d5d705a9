"""The executor on the mock backend: fixed-rate loop, chunk splicing, the watchdog, e-stop on SIGINT, and the
fault tests (stalled policy, NaN observations, a policy that raises, a killed server): every run ends with the
arm held and disarmed within the watchdog time, and its recording opens and holds every step up to the end."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from robopolicy.data.replay_buffer import ReplayBuffer
from robopolicy.hal.backend import State
from robopolicy.hal.executor import Executor, ExecutorConfig
from robopolicy.hal.mock import MockBackend
from robopolicy.hal.recorder import Recorder
from robopolicy.hal.shield.hardware import ShieldedBackend, ShieldOptions, build_shield
from robopolicy.hal.spec import load_hardware

ROOT = Path(__file__).resolve().parents[1]
RATE = 100.0
SPEC = dataclasses.replace(load_hardware("panda_sim"), control_rate_hz=RATE, cameras=[])
HOME = np.array(SPEC.home)


def armed_mock(**kwargs) -> MockBackend:
    backend = MockBackend(SPEC, **kwargs)
    backend.connect()
    backend.arm()
    return backend


def shielded(backend) -> ShieldedBackend:
    return ShieldedBackend(backend, build_shield(backend.spec, ShieldOptions.joint_only()))


def sweep(history: dict[str, np.ndarray]) -> np.ndarray:
    """A 16-step chunk that moves every joint away from the newest observed position."""
    return history["joint_position"][-1] + 0.005 * np.arange(1, 17)[:, None] * np.ones(7)


def commands(backend: MockBackend) -> list[np.ndarray]:
    return [value for kind, value in backend.robot.log if kind == "command"]


# ---- normal runs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("splice, replan, realtime", [("replace", "fixed", False), ("ensemble", "adaptive", True)])
def test_run_commands_only_shielded_actions_at_the_rate_and_records_every_step(tmp_path, splice, replan,
                                                                                realtime) -> None:
    backend = armed_mock()
    recorder = Recorder(tmp_path / "run.zarr", SPEC)
    config = ExecutorConfig(max_steps=60, splice=splice, replan=replan, realtime=realtime)
    executor = Executor(shielded(backend), sweep, config, recorder=recorder)
    t0 = time.monotonic()
    report = executor.run()
    recorder.close()
    elapsed = time.monotonic() - t0
    assert report.reason == "completed" and report.steps == 60 and report.held
    assert backend.state is State.CONNECTED and backend.robot.held  # held and disarmed
    assert elapsed >= 59 / RATE  # absolute deadlines: never faster than the rate
    assert report.chunks >= 2 and report.summary()["jitter_ms"]["n"] == 60
    applied = commands(backend)
    assert len(applied) == 60
    rb = ReplayBuffer.open(tmp_path / "run.zarr")
    assert rb.n_episodes == 1 and rb.n_steps == 60
    np.testing.assert_allclose(rb.read("action"), np.stack(applied), atol=1e-6)  # what was sent, as float32
    assert rb.attrs["episode_outcomes"][0]["reason"] == "completed"
    assert set(rb.attrs["obs"]) >= {"joint_position", "joint_velocity"}


def test_recorded_run_is_readable_by_data_inspect(tmp_path) -> None:
    backend = armed_mock()
    recorder = Recorder(tmp_path / "run.zarr", SPEC)
    Executor(shielded(backend), sweep, ExecutorConfig(max_steps=10), recorder=recorder).run()
    recorder.close()
    out = subprocess.run([sys.executable, "-m", "robopolicy.cli", "data", "inspect", str(tmp_path / "run.zarr")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "episodes  1" in out.stdout and "frames    10" in out.stdout


# ---- faults --------------------------------------------------------------------------------------------------

def test_stalled_policy_trips_the_watchdog_within_n_periods(tmp_path) -> None:
    release = threading.Event()
    calls = []

    def stalls_after_first(history):
        calls.append(1)
        if len(calls) > 1:
            release.wait(30)  # never returns during the run
        return sweep(history)

    backend = armed_mock()
    recorder = Recorder(tmp_path / "run.zarr", SPEC)
    config = ExecutorConfig(watchdog_periods=20, n_action_steps=8)
    report = Executor(shielded(backend), stalls_after_first, config, recorder=recorder).run()
    release.set()
    recorder.close()
    assert report.reason == "watchdog" and report.held and backend.robot.held
    # the 16-step first chunk runs out, then 20 standstill periods, then the hold
    # (on a loaded machine a late tick may be skipped: the watchdog counts periods, not executed ticks)
    assert report.dry_ticks + report.skipped_ticks >= 20 and report.dry_ticks <= 20
    assert report.steps + report.skipped_ticks >= 16 + 19 - 1 and report.steps <= 16 + 19  # -1: tick 15 skipped
    assert backend.robot.log[-1][0] == "hold"
    rb = ReplayBuffer.open(tmp_path / "run.zarr")
    assert rb.n_steps == report.steps
    assert np.isnan(rb.read("commanded_action")[16:]).all()  # the standstill ticks had no policy action


def test_nan_observation_faults_and_holds_with_the_recording_intact(tmp_path) -> None:
    backend = armed_mock()

    def nan_after_25(step, obs):
        if step == 25:
            backend.inject("nan_reading")  # the next reading holds a NaN
        return False

    recorder = Recorder(tmp_path / "run.zarr", SPEC)
    report = Executor(shielded(backend), sweep, ExecutorConfig(n_action_steps=4), recorder=recorder).run(nan_after_25)
    recorder.close()
    assert report.reason == "fault" and "nan" in report.detail.lower() and report.steps == 25
    assert backend.state is State.FAULTED and backend.robot.held
    rb = ReplayBuffer.open(tmp_path / "run.zarr")
    assert rb.n_steps == 25 and np.isfinite(rb.read("joint_position")).all()  # the NaN reading is not recorded


def test_policy_error_holds_the_arm() -> None:
    calls = []

    def breaks(history):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("CUDA out of memory")
        return sweep(history)

    backend = armed_mock()
    report = Executor(shielded(backend), breaks, ExecutorConfig(n_action_steps=4)).run()
    assert report.reason == "policy_error" and "out of memory" in report.detail
    assert report.held and backend.robot.held and backend.state is State.CONNECTED


def test_sigint_latches_the_estop_and_nothing_is_written_after() -> None:
    backend = armed_mock()
    executor = Executor(shielded(backend), sweep, ExecutorConfig(max_steps=10_000))
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when started as a background job

    def interrupt():
        time.sleep(0.15)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    report = executor.run()
    assert report.reason == "estop" and report.held
    assert backend.status().estopped and backend.robot.held
    kinds = [kind for kind, _ in backend.robot.log]
    assert "estop" in kinds and "command" not in kinds[kinds.index("estop"):]  # the arm's own log: nothing after
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_killed_server_faults_the_run_within_the_link_timeout(tmp_path) -> None:
    pytest.importorskip("zmq")
    from robopolicy.hal import link
    from robopolicy.hal.remote import RemoteBackend

    key = "0123456789abcdef0123456789abcdef"
    port = _free_port()
    hw = tmp_path / "fast.toml"
    hw.write_text((ROOT / "hardware" / "panda_sim.toml").read_text().replace("control_rate_hz = 20.0",
                                                                              "control_rate_hz = 50.0"))
    proc = subprocess.Popen([sys.executable, "-m", "robopolicy.cli", "hardware", "serve", str(hw), "--backend", "mock",
                             "--port", str(port), "--duration", "60"], env={**os.environ, link.KEY_ENV: key},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "serving" in proc.stdout.readline()
        fast = load_hardware(hw)
        os.environ[link.KEY_ENV] = key
        try:
            remote = RemoteBackend(fast, address=f"tcp://127.0.0.1:{port}", timeout_s=2.0)
        finally:
            del os.environ[link.KEY_ENV]
        remote.connect()
        remote.timeout_s = 0.3  # replies slower than this are a lost link (0.1 s flaked on a loaded 2-core machine)
        remote.arm()
        recorder = Recorder(tmp_path / "run.zarr", fast)
        killed_at = []

        def kill_after(step, obs):
            if step == 10:
                proc.send_signal(signal.SIGKILL)
                killed_at.append(time.monotonic())
            return False

        robot = ShieldedBackend(remote, build_shield(fast, ShieldOptions.joint_only()))
        report = Executor(robot, sweep, ExecutorConfig(max_steps=500), recorder=recorder).run(until=kill_after)
        ended = time.monotonic()
        recorder.close()
        assert killed_at, f"the run ended before the server was killed: {report.reason} {report.detail}"
        assert report.reason == "fault" and remote.state is State.FAULTED
        assert ended - killed_at[0] < 20 / fast.control_rate_hz + 1.0  # within the watchdog time (+ teardown)
        assert ReplayBuffer.open(tmp_path / "run.zarr").n_steps == report.steps >= 10
        remote.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
