"""stack_compat's checkpoint loader (classification.models.checkpoint.read_checkpoint):
mmengine training state loads weights-only, anything beyond it is refused with a message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classification.models.checkpoint import TRUST_ENV, UntrustedCheckpointError


class _ReachesForGlobals:
    """Pickles as getattr(HistoryBuffer.min, '__globals__'): what a hostile file would
    need a free getattr for."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer

        return getattr, (HistoryBuffer.min, "__globals__")


def test_mmengine_training_state_loads_weights_only(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader

    from dense_common import stack_compat

    stack_compat.apply()
    buffer = HistoryBuffer()
    for value in (3.0, 2.0, 1.0):
        buffer.update(value)
    path = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "message_hub": {"log_scalars": {"train/loss": buffer}},
                "meta": {"seed": np.int64(7), "history": np.arange(3.0)}}, path)
    assert "builtins.getattr" in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))

    loaded = CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    restored = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert restored.mean() == 2.0 and restored.min() == 1.0
    assert loaded["meta"]["seed"] == 7 and loaded["meta"]["history"].tolist() == [0.0, 1.0, 2.0]


def test_other_pickled_objects_are_refused(tmp_path, monkeypatch):
    from dense_common import stack_compat

    monkeypatch.delenv(stack_compat.TRUST_ENV, raising=False)
    path = tmp_path / "hostile.pth"
    torch.save({"x": _ReachesForGlobals()}, path)
    with pytest.raises(UntrustedCheckpointError, match=stack_compat.TRUST_ENV):
        stack_compat.torch_load(str(path))
    assert stack_compat.TRUST_ENV == TRUST_ENV  # one opt-in for the whole repository
