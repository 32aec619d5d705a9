"""The demo's stage runner: resumes after the last finished stage, names a failing stage, keeps records."""

from __future__ import annotations

import io
import json

import pytest

from robopolicy.pipeline.stages import Stage, StageFailed, StageRunner


def _stages(calls: list[str], fail: str | None = None) -> list[Stage]:
    def make(name: str):
        def run(done):
            calls.append(name)
            if name == fail:
                raise ValueError(f"{name} broke")
            return {"value": len(done)}  # sees the records of every earlier stage
        return run

    return [Stage(n, f"stage {n}", make(n), 1.0) for n in ("a", "b", "c")]


def test_a_failed_stage_is_named_and_a_rerun_resumes_there(tmp_path):
    calls: list[str] = []
    with pytest.raises(StageFailed, match="stage 'b' failed: ValueError: b broke"):
        StageRunner(tmp_path, _stages(calls, fail="b"), stream=io.StringIO()).run()
    assert calls == ["a", "b"]
    assert "ValueError: b broke" in (tmp_path / "failed_stage.txt").read_text()
    assert list(json.loads((tmp_path / "stages.json").read_text())["finished"]) == ["a"]

    calls.clear()
    log = io.StringIO()
    done = StageRunner(tmp_path, _stages(calls), stream=log).run()
    assert calls == ["b", "c"]  # "a" is not run again
    assert [done[n]["value"] for n in "abc"] == [0, 1, 2]
    assert "[1/3] a: done in an earlier run, skipped" in log.getvalue()
    assert "ETA for the rest" in log.getvalue()


def test_fresh_runs_everything_again(tmp_path):
    calls: list[str] = []
    StageRunner(tmp_path, _stages(calls), stream=io.StringIO()).run()
    StageRunner(tmp_path, _stages(calls), fresh=True, stream=io.StringIO()).run()
    assert calls == ["a", "b", "c"] * 2


def test_stage_names_must_be_unique(tmp_path):
    stage = Stage("a", "", lambda done: {}, 1.0)
    with pytest.raises(ValueError, match="unique"):
        StageRunner(tmp_path, [stage, stage])
