"""Optional QP projection (control-barrier-function style): the command closest to the requested one that
satisfies every joint interval at once and a linearised workspace barrier.

minimise ||q - q_req||^2  subject to  lo <= q <= hi                     (all joint stages' intervals)
                                      gamma * (p - upper) <= J (q - q_last) <= gamma * (p - lower) ... per axis
where p = ee(q_last) and J its Jacobian: the discrete barrier h(q_next) >= (1 - gamma) h(q_last) for the
box's faces, linearised. It is solved with quadprog through qpsolvers when they are installed (robosuite
depends on both); otherwise, and when there is no workspace, the exact closed-form answer for the box alone
(per-joint clipping). Linearisation is not exact, so the pipeline still checks the true workspace afterwards.
"""

from __future__ import annotations

import numpy as np

from robopolicy.hal.shield.kinematics import ShadowModel, Workspace
from robopolicy.hal.shield.stages import Correction, Motion

try:
    import qpsolvers
except ImportError:  # pragma: no cover - qpsolvers comes with robosuite (the sim extra)
    qpsolvers = None

SOLVER = "quadprog" if qpsolvers is not None and "quadprog" in qpsolvers.available_solvers else None


def solver_name(workspace: Workspace | None) -> str:
    """Which method `qp_stage` uses: "quadprog" or "box" (closed form, joint intervals only)."""
    return SOLVER if SOLVER is not None and workspace is not None else "box"


def qp_stage(request: np.ndarray, last: Motion, box_lo: np.ndarray, box_hi: np.ndarray,
             shadow: ShadowModel | None = None, workspace: Workspace | None = None,
             gamma: float = 0.5) -> Correction:
    """Project ``request`` onto the joint box [box_lo, box_hi] and the linearised workspace barrier.

    Infeasible (``feasible=False``, the command left as ``last.q``) when the box is empty or the solver finds
    no point; the pipeline then falls back.
    """
    if (box_lo > box_hi).any():
        return Correction(last.q.copy(), float("inf"), False, "joint limits have no common command")
    if shadow is None or workspace is None or SOLVER is None:
        out = np.clip(request, box_lo, box_hi)
        return Correction(out, float(np.max(np.abs(out - request), initial=0.0)), True, "box")
    p, jac = shadow.ee_jacobian(last.q)
    n = len(request)
    G = np.vstack([jac, -jac])
    h = np.concatenate([gamma * (workspace.upper - p), gamma * (p - workspace.lower)]) + G @ last.q
    solution = qpsolvers.solve_qp(np.eye(n), -request, G, h, lb=box_lo, ub=box_hi, solver=SOLVER)
    if solution is None or not np.isfinite(solution).all():
        return Correction(last.q.copy(), float("inf"), False, "QP infeasible")
    out = np.clip(solution, box_lo, box_hi)  # the solver's own tolerance, removed
    return Correction(out, float(np.max(np.abs(out - request), initial=0.0)), True, SOLVER)
