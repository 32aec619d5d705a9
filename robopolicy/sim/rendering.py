"""Headless OpenGL backend choice and MuJoCo renderers with fast or pretty visual settings.

MuJoCo picks its GL backend from ``MUJOCO_GL`` when ``mujoco`` is first imported, so
:func:`select_gl_backend` must run before that import; ``robopolicy.sim`` calls it on import.
The default 4096² shadow map and multisampling make an 84×84 render ~20× slower on a CPU
(llvmpipe), so observations use :func:`make_renderer` with ``fast=True``; videos keep the
pretty defaults.
"""

from __future__ import annotations

import ctypes.util
import logging
import os

import numpy as np

log = logging.getLogger(__name__)

_BACKEND_LIBS = {"egl": "EGL", "osmesa": "OSMesa"}


def select_gl_backend() -> str:
    """Set ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) to egl or osmesa unless the user chose one; return it."""
    chosen = os.environ.get("MUJOCO_GL")
    if not chosen:
        available = [name for name, lib in _BACKEND_LIBS.items() if ctypes.util.find_library(lib)]
        chosen = available[0] if available else ("glfw" if os.environ.get("DISPLAY") else "egl")
        os.environ["MUJOCO_GL"] = chosen
        log.info("MUJOCO_GL=%s chosen automatically (found: %s)", chosen, ", ".join(available) or "none")
    if chosen in _BACKEND_LIBS:
        os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
    return chosen


def make_renderer(model, height: int, width: int, fast: bool):
    """A ``mujoco.Renderer`` for ``model``; ``fast`` turns off shadows, reflections and multisampling.

    Shadow-map size and offscreen samples are read when the GL context is made, so they are set on the
    model only for the duration of the construction and restored afterwards (a pretty renderer made
    later for the same model keeps its shadows).
    """
    import mujoco

    quality = model.vis.quality
    saved = (quality.shadowsize, quality.offsamples)
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    if fast:
        quality.shadowsize, quality.offsamples = 0, 0
    try:
        renderer = mujoco.Renderer(model, height=height, width=width)
    finally:
        quality.shadowsize, quality.offsamples = saved
    if fast:
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    return renderer


def render(renderer, data, camera: str | int = -1) -> np.ndarray:
    """Render one uint8 HWC frame of ``data`` from ``camera`` (name or id; -1 is the free camera)."""
    renderer.update_scene(data, camera=camera)
    return renderer.render()
