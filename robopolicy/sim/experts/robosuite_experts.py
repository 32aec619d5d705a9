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

# a phase's target: gripper position, yaw (None keeps it), gripper command, whether the phase is over
Target = tuple[np.ndarray, float | None, float, bool]


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

    def target(self, name: str, obs: dict[str, np.ndarray]) -> Target:
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


class PickPlaceWaypointExpert(WaypointExpert):
    """Pick an object up and put it down at ``place``.

    Grasping, lifting to ``carry_height``, releasing and backing off up again do not depend on the
    object, so they live here; a subclass's ``target`` handles the phases that do (above, descend,
    carry, lower) and passes the others on, and its ``grasp_goal`` says where the fingers close.
    """

    phases = ("above", "descend", "grasp", "lift", "carry", "lower", "release", "retreat")
    object_offset = 7  # robosuite lists <obj>_to_robot0_eef_pos and _quat first

    def __init__(self, place: list[float], carry_height: float = 1.05, **kwargs):
        super().__init__(**kwargs)
        self.place = np.asarray(place, dtype=np.float64)
        self.carry_height = carry_height

    def grasp_goal(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Gripper position at which the fingers close on the object."""
        raise NotImplementedError

    def target(self, name: str, obs: dict[str, np.ndarray]) -> Target:
        eef = self._eef(obs)
        if name == "grasp":
            return self.grasp_goal(obs), None, CLOSED, self.phase_steps >= 12
        if name == "lift":
            goal = np.array([eef[0], eef[1], self.carry_height])
            return goal, None, CLOSED, eef[2] > self.carry_height - 0.03
        if name == "release":
            return eef, None, OPEN, self.phase_steps >= 8
        return np.array([eef[0], eef[1], self.carry_height]), None, OPEN, False  # retreat

    def _over_place(self, obs: dict[str, np.ndarray], z: float) -> np.ndarray:
        """Gripper position, at height ``z``, that holds the object over ``place``: once grasped, the
        object hangs at a fixed offset from the gripper, so steering the gripper itself would miss by it."""
        held = self._eef(obs)[:2] - self._object(obs)[0][:2]
        return np.array([*(self.place[:2] + held), z])

    def _eef(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(obs["robot0_eef_pos"], dtype=np.float64)


class CanExpert(PickPlaceWaypointExpert):
    """Pick the can from its bin, carry it over the target bin section (``target``), drop it and move away."""

    def __init__(self, target: list[float], carry_height: float = 1.05, **kwargs):
        super().__init__(target, carry_height, **kwargs)

    def grasp_goal(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self._object(obs)[0] + [0, 0, 0.01]

    def target(self, name: str, obs: dict[str, np.ndarray]) -> Target:
        can, _ = self._object(obs)
        if name == "above":
            goal = can + [0, 0, 0.1]
            return goal, 0.0, OPEN, self._at(obs, goal, 0.015)
        if name == "descend":
            goal = self.grasp_goal(obs)
            return goal, 0.0, OPEN, self._at(obs, goal, 0.008)
        if name == "carry":
            goal = self._over_place(obs, self.carry_height)
            return goal, None, CLOSED, bool(np.linalg.norm(can[:2] - self.place[:2]) < 0.03)
        if name == "lower":  # until the can is about 12 cm over ``place``, then drop it
            goal = self._over_place(obs, self.place[2] + 0.12 + (self._eef(obs)[2] - can[2]))
            return goal, None, CLOSED, can[2] < self.place[2] + 0.13
        return super().target(name, obs)


class SquareExpert(PickPlaceWaypointExpert):
    """Grasp the square nut by its handle, carry it over the square peg (``place``) with its sides
    aligned, drop it.

    What used to strand it (~20 % of episodes): a handle pointing away from the robot puts the gripper
    out of the Panda's reach over the peg; a yaw turn the wrong way round drives joint 7 into its limit,
    after which the arm stops moving; a descent off to one side lands a finger on the nut; a missed,
    slipped or jammed nut left it waiting forever. So among the equivalent yaws (the handle modulo 180°
    for the grasp, the nut modulo 90° for the peg) it picks the one nearest the middle of joint 7's
    range and keeps the handle off the far side of the peg; it centres over the handle before
    descending; it grasps again when the fingers close on nothing or the nut slips off beside the peg,
    and lifts and aligns again when the nut jams on the peg.
    """

    EMPTY_GAP = 0.01  # finger gap (m) below which the gripper holds nothing; the handle is 0.032 m wide
    # gripper yaw, relative to its yaw at reset, with joint 7 mid-range: robosuite's Panda starts it at
    # 0.82 rad of [-2.90, 2.90], and the gripper's yaw falls as joint 7 rises
    MID_RANGE_YAW = 0.82

    def __init__(self, peg: list[float], handle_offset: float = 0.054, carry_height: float = 1.05, **kwargs):
        super().__init__(peg, carry_height, **kwargs)
        self.handle_offset = handle_offset
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
        dropped = name == "lower" and nut[2] < self.place[2] + 0.02 and np.linalg.norm(nut[:2] - self.place[:2]) > 0.02
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

    def _handle(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        nut, quat = self._object(obs)
        return nut + quat_to_mat(quat) @ np.array([self.handle_offset, 0.0, 0.0])

    def grasp_goal(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self._handle(obs) + [0, 0, -0.005]

    def target(self, name: str, obs: dict[str, np.ndarray]) -> Target:
        nut, quat = self._object(obs)
        eef = self._eef(obs)
        nut_yaw = yaw_of(quat)
        eef_yaw = yaw_of(obs["robot0_eef_quat"])
        handle = self._handle(obs)
        if name == "above":
            goal = handle + [0, 0, 0.08]
            # the wrist may settle a little short of the exact yaw: accept a looser one after a while
            yaw_tol = 0.05 if self.phase_steps < 60 else 0.15
            done = self._at(obs, goal, 0.012) and abs(wrap(nut_yaw - eef_yaw, np.pi)) < yaw_tol
            return goal, self.grasp_yaw(nut_yaw), OPEN, done
        if name == "descend":
            # hover until the fingers straddle the handle: descending off to one side lands a finger on the nut
            centred = np.linalg.norm(eef[:2] - handle[:2]) < 0.005 or self.phase_steps >= 15
            goal = self.grasp_goal(obs) if centred else np.array([*handle[:2], eef[2]])
            # the OSC settles a few mm short when a finger brushes the nut: grasp anyway after a while
            return goal, self.grasp_yaw(nut_yaw), OPEN, self._at(obs, goal, 0.006) or self.phase_steps >= 40
        if name not in ("carry", "lower"):
            return super().target(name, obs)
        yaw = eef_yaw + self.carry_turn(nut_yaw, eef_yaw)
        err = np.linalg.norm(nut[:2] - self.place[:2])
        if name == "carry":
            aligned = abs(wrap(nut_yaw, np.pi / 2)) < 0.04
            done = (err < 0.004 and aligned) or (self.phase_steps >= 80 and err < 0.008)
            return self._over_place(obs, self.carry_height), yaw, CLOSED, done
        return self._over_place(obs, eef[2] - 0.05), yaw, CLOSED, nut[2] < self.place[2] + 0.02 and err < 0.02
