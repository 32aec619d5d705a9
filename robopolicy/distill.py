"""Consistency distillation at the policy level: a student Policy that sees exactly the teacher's conditioning.

The student copies the teacher's normalizer and observation encoder and freezes the encoder, so teacher and
student heads are fed the same conditioning vector (the teacher head is called on the student's `cond`).
The teacher head is attached without becoming a submodule: a saved student holds only its own weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from robopolicy.heads.consistency import ConsistencyHead
from robopolicy.policy import Policy
from robopolicy.specs import HeadConfig


def distill_policy(teacher: Policy, params: dict[str, Any] | None = None) -> Policy:
    """Student Policy with a consistency head in distillation mode, ready for the ordinary BC trainer."""
    head = HeadConfig(name="consistency", params={**(params or {}), "mode": "distillation"})
    student = Policy(dataclasses.replace(teacher.config, head=head)).to(teacher.device)
    student.normalizer.load_state_dict(teacher.normalizer.state_dict())
    student.encoder.load_state_dict(teacher.encoder.state_dict())
    student.encoder.requires_grad_(False)
    assert isinstance(student.head, ConsistencyHead)
    student.head.set_teacher(teacher.head)
    return student
