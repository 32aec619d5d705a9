"""The constraint shield: an ordered pipeline of pure stages that every actuator command passes.

``stages`` (joint space), ``servo`` (where a modelled position servo carries the joints from their measured
state), ``kinematics`` (the MuJoCo shadow model: workspace and collision), ``qp`` (the
optional projection), ``pipeline`` (order, final check, fallback, logs), ``hardware`` (building one from a
hardware file and the shielded backend wrapper, the only caller of a backend's raw write).
"""

from robopolicy.hal.shield.pipeline import EpisodeCounts, Intervention, Shield, ShieldConfig, ShieldFault, ShieldStep
from robopolicy.hal.shield.stages import JointLimits, Motion

__all__ = ["EpisodeCounts", "Intervention", "JointLimits", "Motion", "Shield", "ShieldConfig", "ShieldFault",
           "ShieldStep"]
