"""Scripted waypoint experts for robosuite Lift, Can (PickPlaceCan) and Square (NutAssemblySquare).

They read only the low-dim observations (``object``, ``robot0_eef_pos``, ``robot0_eef_quat``) and emit
robosuite's default OSC_POSE delta actions: [dx, dy, dz] scaled by 0.05 m, an axis-angle [rx, ry, rz]
in the base frame scaled by 0.5 rad, and the gripper (-1 open, +1 closed). Each expert is a short list
of phases; a phase names a gripper target (position, yaw, gripper) and when it is over. Fixed scene
positions (the Can's bin, the square peg) come from the task file.
"""

from __future__ import annotations

import numpy as np

OPEN, CLOSED = -1.0, 1.0
ROT_SCALE = 0.5  # radians per unit of rotation action in robosuite's default OSC_POSE


def quat_to_mat(q_xyzw: np.ndarray) -> np.ndarray:
    """Rotation matrix of a robosuite (x, y, z, w) quaternion."""
    x, y, z, w = q_xyzw / np.linalg.norm(q_xyzw)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def yaw_of(q_xyzw: np.ndarray) -> float:
    """Heading of the frame's x axis in the world xy plane."""
    m = quat_to_mat(q_xyzw)
    return float(np.arctan2(m[1, 0], m[0, 0]))


def wrap(angle: float, period: float) -> float:
    """``angle`` wrapped into [-period/2, period/2): the smallest turn for a shape with that symmetry."""
    return float((angle + period / 2) % period - period / 2)


class WaypointExpert:
    """Phase machine shared by the robosuite experts.

    ``noise`` is the std of Gaussian noise on the arm action and ``pause_prob`` the chance of idling for
    a step; together they turn a "proficient" expert into a "multi-human"-like one. ``gain`` is the
    position action per metre of error (the action saturates at 1/gain metres).
    """

    phases: tuple[str, ...] = ()
    # where the object's position and (x, y, z, w) quaternion start in the ``object`` observation
    object_offset = 0

    def __init__(self, noise: float = 0.0, pause_prob: float = 0.0, gain: float = 12.0, seed: int | None = None):
        self.noise = noise
        self.pause_prob = pause_prob
        self.gain = gain
        self.rng = np.random.default_rng(seed)
        self.phase = 0
        self.phase_steps = 0

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.phase, self.phase_steps = 0, 0

    def target(self, name: str, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float | None, float, bool]:
        """(gripper position, yaw or None to keep it, gripper command, phase done) for phase ``name``."""
        raise NotImplementedError

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        name = self.phases[min(self.phase, len(self.phases) - 1)]
        pos, yaw, grip, done = self.target(name, obs)
        self.phase_steps += 1
        if done and self.phase < len(self.phases) - 1:
            self.phase, self.phase_steps = self.phase + 1, 0
        return self._command(obs, pos, yaw, grip)

    def _command(self, obs: dict[str, np.ndarray], pos: np.ndarray, yaw: float | None, grip: float) -> np.ndarray:
        eef_rot = quat_to_mat(obs["robot0_eef_quat"])
        # keep the gripper pointing down: rotate its z axis onto -z, plus the yaw turn about z
        rot = np.cross(eef_rot[:, 2], np.array([0.0, 0.0, -1.0]))
        if yaw is not None:
            rot[2] += wrap(yaw - float(np.arctan2(eef_rot[1, 0], eef_rot[0, 0])), 2 * np.pi)
        move = (pos - obs["robot0_eef_pos"]) * self.gain
        arm = np.concatenate([np.clip(move, -1, 1), np.clip(rot / ROT_SCALE, -1, 1)])
        if self.noise > 0:
            arm += self.rng.normal(0.0, self.noise, 6)
        if self.pause_prob > 0 and self.rng.random() < self.pause_prob:
            arm[:] = 0.0
        return np.concatenate([np.clip(arm, -1, 1), [grip]]).astype(np.float32)

    def _object(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        state = np.asarray(obs["object"], dtype=np.float64)[self.object_offset:]
        return state[:3], state[3:7]

    def _at(self, obs: dict[str, np.ndarray], pos: np.ndarray, tol: float = 0.01) -> bool:
        return bool(np.linalg.norm(obs["robot0_eef_pos"] - pos) < tol)


class LiftExpert(WaypointExpert):
    """Grasp the cube across two faces (yaw aligned modulo 90°) and lift it."""

    phases = ("above", "descend", "grasp", "lift")

    def target(self, name, obs):
        cube, quat = self._object(obs)
        eef_yaw = yaw_of(obs["robot0_eef_quat"])
        yaw = eef_yaw + wrap(yaw_of(quat) - eef_yaw, np.pi / 2)
        if name == "above":
            goal = cube + [0, 0, 0.08]
            return goal, yaw, OPEN, self._at(obs, goal, 0.015)
        if name == "descend":
            goal = cube + [0, 0, -0.005]
            return goal, yaw, OPEN, self._at(obs, goal, 0.008)
        if name == "grasp":
            return cube + [0, 0, -0.005], None, CLOSED, self.phase_steps >= 12
        return cube + [0, 0, 0.25], None, CLOSED, False


class CanExpert(WaypointExpert):
    """Pick the can from its bin, carry it over the target bin section, drop it and move away."""

    phases = ("above", "descend", "grasp", "lift", "carry", "lower", "release", "retreat")
    object_offset = 7  # robosuite lists <obj>_to_robot0_eef_pos and _quat first

    def __init__(self, target: list[float], carry_height: float = 1.05, **kwargs):
        super().__init__(**kwargs)
        self.goal = np.asarray(target, dtype=np.float64)
        self.carry_height = carry_height

    def target(self, name, obs):
        can, _ = self._object(obs)
        eef = np.asarray(obs["robot0_eef_pos"], dtype=np.float64)
        if name == "above":
            goal = can + [0, 0, 0.1]
            return goal, 0.0, OPEN, self._at(obs, goal, 0.015)
        if name == "descend":
            goal = can + [0, 0, 0.01]
            return goal, 0.0, OPEN, self._at(obs, goal, 0.008)
        if name == "grasp":
            return can + [0, 0, 0.01], None, CLOSED, self.phase_steps >= 12
        if name == "lift":
            goal = np.array([eef[0], eef[1], self.carry_height])
            return goal, None, CLOSED, eef[2] > self.carry_height - 0.03
        held = eef - can  # the can hangs at a fixed offset from the gripper once grasped
        if name == "carry":
            goal = np.array([self.goal[0], self.goal[1], self.carry_height]) + [held[0], held[1], 0]
            return goal, None, CLOSED, bool(np.linalg.norm(can[:2] - self.goal[:2]) < 0.03)
        if name == "lower":
            goal = np.array([self.goal[0] + held[0], self.goal[1] + held[1], self.goal[2] + 0.12 + held[2]])
            return goal, None, CLOSED, can[2] < self.goal[2] + 0.13
        if name == "release":
            return eef, None, OPEN, self.phase_steps >= 8
        return np.array([eef[0], eef[1], self.carry_height]), None, OPEN, False


class SquareExpert(WaypointExpert):
    """Grasp the square nut by its handle, carry it over the square peg with its sides aligned, drop it.

    What used to strand it (~20 % of episodes): a handle pointing away from the robot puts the gripper
    out of the Panda's reach over the peg; a yaw turn the wrong way round drives joint 7 into its limit,
    after which the arm stops moving; a descent off to one side lands a finger on the nut; a missed,
    slipped or jammed nut left it waiting forever. So among the equivalent yaws (the handle modulo 180°
    for the grasp, the nut modulo 90° for the peg) it picks the one nearest the middle of joint 7's
    range and keeps the handle off the far side of the peg; it centres over the handle before
    descending; it grasps again when the fingers close on nothing or the nut slips off beside the peg,
    and lifts and aligns again when the nut jams on the peg.
    """

    phases = ("above", "descend", "grasp", "lift", "carry", "lower", "release", "retreat")
    object_offset = 7  # robosuite lists <obj>_to_robot0_eef_pos and _quat first
    EMPTY_GAP = 0.01  # finger gap (m) below which the gripper holds nothing; the handle is 0.032 m wide
    # gripper yaw, relative to its yaw at reset, with joint 7 mid-range: robosuite's Panda starts it at
    # 0.82 rad of [-2.90, 2.90], and the gripper's yaw falls as joint 7 rises
    MID_RANGE_YAW = 0.82

    def __init__(self, peg: list[float], handle_offset: float = 0.054, carry_height: float = 1.05, **kwargs):
        super().__init__(**kwargs)
        self.peg = np.asarray(peg, dtype=np.float64)
        self.handle_offset = handle_offset
        self.carry_height = carry_height
        self.home_yaw: float | None = None

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.home_yaw = None

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.home_yaw is None:
            self.home_yaw = yaw_of(obs["robot0_eef_quat"])
        qpos = np.asarray(obs["robot0_gripper_qpos"], dtype=np.float64)
        nut, _ = self._object(obs)
        name = self.phases[self.phase]
        dropped = name == "lower" and nut[2] < self.peg[2] + 0.02 and np.linalg.norm(nut[:2] - self.peg[:2]) > 0.02
        if name in ("lift", "carry", "lower") and (qpos[0] - qpos[1] < self.EMPTY_GAP or dropped):
            self.phase, self.phase_steps = 0, 0  # missed the nut, or it slipped off beside the peg: grasp again
        elif name == "lower" and self.phase_steps >= 60:
            self.phase, self.phase_steps = self.phases.index("carry"), 0  # jammed on the peg: lift, align again
        return super().act(obs)

    def _from_mid_range(self, yaw: float, turn: float = 0.0) -> float:
        """How far joint 7 would be from mid-range after turning the gripper from ``yaw`` by ``turn``.
        Not wrapped: the joint is not periodic (the yaw relative to reset is taken within +-180°)."""
        home = yaw if self.home_yaw is None else self.home_yaw
        return abs(wrap(yaw - home, 2 * np.pi) + turn - self.MID_RANGE_YAW)

    def grasp_yaw(self, nut_yaw: float) -> float:
        """Gripper yaw across the handle (fingers along the nut's y), of the two, the one nearer mid-range."""
        return min((nut_yaw, nut_yaw + np.pi), key=self._from_mid_range)

    def carry_turn(self, nut_yaw: float, eef_yaw: float) -> float:
        """Yaw turn that squares the nut with the peg (a multiple of 90° away from the nut's yaw).

        Of the turns within 90°, those that leave the handle pointing at +x (away from the robot) are
        excluded, and the one that ends nearest joint 7's mid-range wins.
        """
        base = wrap(-nut_yaw, np.pi / 2)
        turns = [base + k * np.pi / 2 for k in (-2, -1, 0, 1, 2)]
        allowed = [r for r in turns if abs(r) <= np.pi / 2 + 1e-3 and np.cos(nut_yaw + r) < 0.5]
        return min(allowed, key=lambda r: self._from_mid_range(eef_yaw, r))

    def target(self, name, obs):
        nut, quat = self._object(obs)
        eef = np.asarray(obs["robot0_eef_pos"], dtype=np.float64)
        nut_yaw = yaw_of(quat)
        eef_yaw = yaw_of(obs["robot0_eef_quat"])
        handle = nut + quat_to_mat(quat) @ np.array([self.handle_offset, 0.0, 0.0])
        grasp_yaw = self.grasp_yaw(nut_yaw)
        if name == "above":
            goal = handle + [0, 0, 0.08]
            # the wrist may settle a little short of the exact yaw: accept a looser one after a while
            yaw_tol = 0.05 if self.phase_steps < 60 else 0.15
            return goal, grasp_yaw, OPEN, self._at(obs, goal, 0.012) and abs(wrap(nut_yaw - eef_yaw, np.pi)) < yaw_tol
        if name == "descend":
            # hover until the fingers straddle the handle: descending off to one side lands a finger on the nut
            centred = np.linalg.norm(eef[:2] - handle[:2]) < 0.005 or self.phase_steps >= 15
            goal = handle + [0, 0, -0.005] if centred else np.array([*handle[:2], eef[2]])
            # the OSC settles a few mm short when a finger brushes the nut: grasp anyway after a while
            return goal, grasp_yaw, OPEN, self._at(obs, goal, 0.006) or self.phase_steps >= 40
        if name == "grasp":
            return handle + [0, 0, -0.005], None, CLOSED, self.phase_steps >= 12
        if name == "lift":
            goal = np.array([eef[0], eef[1], self.carry_height])
            return goal, None, CLOSED, eef[2] > self.carry_height - 0.03
        yaw = eef_yaw + self.carry_turn(nut_yaw, eef_yaw)
        offset = eef[:2] - nut[:2]
        aligned = abs(wrap(nut_yaw, np.pi / 2)) < 0.04
        if name == "carry":
            goal = np.array([*(self.peg[:2] + offset), self.carry_height])
            err = np.linalg.norm(nut[:2] - self.peg[:2])
            return goal, yaw, CLOSED, (err < 0.004 and aligned) or (self.phase_steps >= 80 and err < 0.008)
        if name == "lower":
            goal = np.array([*(self.peg[:2] + offset), eef[2] - 0.05])
            return goal, yaw, CLOSED, nut[2] < self.peg[2] + 0.02 and np.linalg.norm(nut[:2] - self.peg[:2]) < 0.02
        if name == "release":
            return eef, None, OPEN, self.phase_steps >= 8
        return np.array([eef[0], eef[1], self.carry_height]), None, OPEN, False
