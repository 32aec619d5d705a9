"""The shield's shadow model: a private MuJoCo copy of the robot for forward kinematics and contact checks.

The shadow never steps physics: it only places the joints at a candidate command and asks where the end
effector would be (workspace stage) and which geoms would touch or come closer than a minimum distance
(collision stage). Both stages correct an offending command the same way: they scale the step from the
last commanded position back, by bisection, to the largest fraction that is still safe. Positions and
rates stay within their limits under such scaling as long as the scaled step is a convex combination of two
safe commands; acceleration and jerk may not, which the pipeline's final check catches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from robopolicy.hal.shield.stages import Correction, Motion

BISECTION_STEPS = 12  # the safe fraction is found to 1/4096 of the step


@dataclass(frozen=True)
class Workspace:
    """An axis-aligned box (metres, in the model's world frame, which is the robot's base frame)."""

    lower: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lower, float), np.asarray(self.upper, float)
        if lo.shape != (3,) or hi.shape != (3,) or not (lo < hi).all():
            raise ValueError(f"workspace: expected 3 lower < 3 upper bounds, got {self.lower} / {self.upper}")
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)

    def contains(self, point: np.ndarray, tolerance: float = 0.0) -> bool:
        return bool(np.isfinite(point).all() and (point >= self.lower - tolerance).all()
                    and (point <= self.upper + tolerance).all())


class ShadowModel:
    """Forward kinematics and contact queries on a MuJoCo model of the robot.

    ``joints`` name the commanded joints in command order (None: the model's joints in order); ``ee`` names
    the end-effector ``ee_kind`` ("site" or "body"). ``min_distance`` (metres): geoms closer than this count as
    colliding; ``allowed`` lists body-name pairs that may touch (e.g. the base on its mount). Parent-child
    bodies never count. A joint name the model lacks raises KeyError.
    """

    def __init__(self, mjcf: str | Path, joints: Sequence[str] | None, ee: str, min_distance: float = 0.0,
                 allowed: Sequence[tuple[str, str]] = (), ee_kind: str = "site") -> None:
        self.model = mujoco.MjModel.from_xml_path(str(mjcf))
        self.data = mujoco.MjData(self.model)
        m = self.model
        names = [m.joint(i).name for i in range(m.njnt)]
        missing = [name for name in joints or () if name not in names]
        if missing:
            raise KeyError(f"{mjcf}: no joint(s) {missing} in the model (joints: {names})")
        ids = [names.index(name) for name in joints] if joints is not None else list(range(m.njnt))
        self._qpos, self._dofs = m.jnt_qposadr[ids], m.jnt_dofadr[ids]
        kind = mujoco.mjtObj.mjOBJ_SITE if ee_kind == "site" else mujoco.mjtObj.mjOBJ_BODY
        index = self._lookup(kind, ee)
        if index is None:
            raise ValueError(f"{mjcf}: no {ee_kind} named {ee!r} for the end effector")
        self._site, self._body = (index, None) if ee_kind == "site" else (None, index)
        self.min_distance = float(min_distance)
        m.geom_margin[:] = np.maximum(m.geom_margin, self.min_distance)  # report pairs within min_distance
        # parent-child pairs touch by construction; MuJoCo skips them except under a body welded to the world
        pairs = {frozenset((b, int(m.body_parentid[b]))) for b in range(1, m.nbody)}
        for a, b in allowed:
            ia, ib = (self._lookup(mujoco.mjtObj.mjOBJ_BODY, name) for name in (a, b))
            if ia is None or ib is None:
                raise ValueError(f"{mjcf}: allowed contact ({a!r}, {b!r}) names a body the model lacks")
            pairs.add(frozenset((ia, ib)))
        self._allowed = pairs

    @property
    def n_joints(self) -> int:
        return len(self._qpos)

    def _lookup(self, kind: mujoco.mjtObj, name: str) -> int | None:
        index = mujoco.mj_name2id(self.model, kind, name)
        return None if index < 0 else index

    def _place(self, q: np.ndarray) -> None:
        self.data.qpos[self._qpos] = q
        mujoco.mj_kinematics(self.model, self.data)

    def ee_position(self, q: np.ndarray) -> np.ndarray:
        """Where the end effector would be at joint positions ``q``."""
        self._place(q)
        pos = self.data.site_xpos[self._site] if self._site is not None else self.data.xpos[self._body]
        return pos.copy()

    def ee_jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End-effector position and its (3, n_joints) translational Jacobian at ``q``."""
        self._place(q)
        mujoco.mj_comPos(self.model, self.data)
        jac = np.zeros((3, self.model.nv))
        if self._site is not None:
            mujoco.mj_jacSite(self.model, self.data, jac, None, self._site)
            pos = self.data.site_xpos[self._site].copy()
        else:
            mujoco.mj_jacBody(self.model, self.data, jac, None, self._body)
            pos = self.data.xpos[self._body].copy()
        return pos, jac[:, self._dofs]

    def contacts(self, q: np.ndarray) -> list[tuple[str, str, float]]:
        """Disallowed body pairs closer than ``min_distance`` at ``q``: (body, body, signed distance)."""
        self._place(q)
        mujoco.mj_collision(self.model, self.data)
        m, found = self.model, []
        for contact in self.data.contact[: self.data.ncon]:
            b1, b2 = m.geom_bodyid[contact.geom1], m.geom_bodyid[contact.geom2]
            if contact.dist < self.min_distance and frozenset((b1, b2)) not in self._allowed:
                found.append((m.body(b1).name, m.body(b2).name, float(contact.dist)))
        return found


def scale_back(command: np.ndarray, last: Motion, safe: Callable[[np.ndarray], bool], what: str) -> Correction:
    """The largest fraction of the step from ``last.q`` towards ``command`` that ``safe`` accepts (bisection;
    the returned point is always one ``safe`` accepted). Infeasible when ``last.q`` itself is unsafe."""
    if safe(command):
        return Correction(command)
    if not safe(last.q):
        return Correction(last.q.copy(), float(np.max(np.abs(command - last.q), initial=0.0)), False,
                          f"the last commanded position is already {what}")
    lo, hi = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if safe(last.q + mid * (command - last.q)):
            lo = mid
        else:
            hi = mid
    out = last.q + lo * (command - last.q)
    return Correction(out, float(np.max(np.abs(out - command), initial=0.0)), True, f"step scaled to {lo:.4f}")


def stopping_point(q: np.ndarray, last: Motion, dt: float, acceleration: np.ndarray) -> np.ndarray:
    """Where the joints would come to rest from ``q`` (reached from ``last.q`` in one period) braking at the
    acceleration limit: q + v |v| / (2 A)."""
    v = (q - last.q) / dt
    return q + v * np.abs(v) / (2.0 * acceleration)


def workspace_stage(command: np.ndarray, last: Motion, shadow: ShadowModel, box: Workspace, dt: float | None = None,
                    acceleration: np.ndarray | None = None) -> Correction:
    """Keep the end effector inside the workspace box; with ``dt`` and ``acceleration``, also where the arm would
    stop braking from there (a braking bound, as for joint positions: the box is never entered at a speed that
    cannot be stopped in time)."""
    def safe(q: np.ndarray) -> bool:
        if not box.contains(shadow.ee_position(q)):
            return False
        return acceleration is None or box.contains(shadow.ee_position(stopping_point(q, last, dt, acceleration)))

    return scale_back(command, last, safe, "outside the workspace")


def collision_stage(command: np.ndarray, last: Motion, shadow: ShadowModel) -> Correction:
    """Keep disallowed geom pairs at least ``shadow.min_distance`` apart."""
    return scale_back(command, last, lambda q: not shadow.contacts(q), "in collision")
