"""Simulation: environments built from task specs (``robopolicy.task``) and vector envs, chunk execution, videos,
scripted experts and demonstration collection.

Importing this package chooses the headless GL backend (``MUJOCO_GL``) before MuJoCo is imported.
"""

from robopolicy.sim.rendering import select_gl_backend

GL_BACKEND = select_gl_backend()

from robopolicy.sim.factory import make_base_env, make_env, make_vector_env  # noqa: E402
from robopolicy.sim.wrappers import MultiStepWrapper  # noqa: E402

__all__ = [
    "GL_BACKEND", "MultiStepWrapper", "make_base_env", "make_env", "make_vector_env",
]
