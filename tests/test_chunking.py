"""The observation window and the action queue that every chunk-executing loop shares (`robopolicy.chunking`)."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from robopolicy.chunking import ChunkQueue, FrameHistory, stack_frames


def test_the_first_frame_fills_the_window_then_frames_slide() -> None:
    history: FrameHistory[dict[str, np.ndarray]] = FrameHistory(3)
    history.push({"x": np.array([0.0])})
    assert [f["x"][0] for f in history.frames] == [0.0, 0.0, 0.0]
    history.push({"x": np.array([1.0])})
    assert stack_frames(history.frames)["x"][:, 0].tolist() == [0.0, 0.0, 1.0]
    history.clear()
    history.push({"x": np.array([5.0])})
    assert stack_frames(history.frames)["x"].shape == (3, 1)
    with pytest.raises(ValueError, match="n_obs_steps"):
        FrameHistory(0)


def test_replace_splicing_drops_stale_actions_and_overrides_the_future() -> None:
    queue: ChunkQueue[np.ndarray] = ChunkQueue("replace")
    queue.put(np.arange(4.0)[:, None], start_tick=0)
    assert queue.pop(0)[0] == 0.0 and queue.pop(1)[0] == 1.0
    stale = queue.put(np.full((4, 1), 10.0), start_tick=1)  # planned from tick 1, arrives after tick 1 ran
    assert stale == 1 and queue.stale_dropped == 1
    assert queue.remaining(2) == 3 and queue.pop(2)[0] == 10.0
    assert queue.pop(7) is None and queue.remaining(7) == 0


def test_temporal_ensembling_averages_overlapping_predictions_oldest_heaviest() -> None:
    queue: ChunkQueue[np.ndarray] = ChunkQueue("ensemble", decay=1.0)
    queue.put(np.zeros((3, 1)), start_tick=0)
    queue.put(np.ones((3, 1)), start_tick=1)
    assert queue.pop(0)[0] == 0.0
    w = np.exp(-np.arange(2.0))
    assert queue.pop(1)[0] == pytest.approx(w[1] / w.sum())
    with pytest.raises(ValueError, match="splice"):
        ChunkQueue("mix")


def test_tensor_chunks_are_time_major_and_ensemble_like_arrays() -> None:
    """Policy.select_action queues (horizon, B, D) tensors: each action keeps its batch rows."""
    queue: ChunkQueue[torch.Tensor] = ChunkQueue("ensemble", decay=1.0)
    queue.put(torch.zeros(2, 3, 1), start_tick=0)
    queue.put(torch.ones(2, 3, 1), start_tick=1)
    assert queue.pop(0).shape == (3, 1)
    w = np.exp(-np.arange(2.0))
    torch.testing.assert_close(queue.pop(1), torch.full((3, 1), float(w[1] / w.sum())))


def test_a_copied_queue_gets_its_own_lock_and_keeps_its_plan() -> None:
    """`copy.deepcopy(policy)` copies its queue; a lock cannot be copied, so the copy makes a new one."""
    queue: ChunkQueue[np.ndarray] = ChunkQueue()
    queue.put(np.arange(3.0)[:, None], start_tick=0)
    clone = copy.deepcopy(queue)
    assert clone._lock is not queue._lock and isinstance(clone._lock, type(threading.Lock()))
    assert clone.pop(0)[0] == 0.0 and clone.remaining(1) == 2 and queue.remaining(0) == 3
