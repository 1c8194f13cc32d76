"""The main job end to end: real digits, the real trainer, >= 90% val top-1."""

from __future__ import annotations

from pathlib import Path

from classification import demo_digits


def test_digits_main_job(tmp_path, capsys):
    result = demo_digits.main(["--output", str(tmp_path)])
    assert result["accuracy"] >= 90.0
    assert result["seconds"] < 600
    run = Path(result["output"])
    assert (run / "curves.png").stat().st_size > 10_000
    assert (run / "ckpt_epoch_best.pth").is_file()
    labels = [label for label, _ in result["top5"]]
    assert len(labels) == 5 and set(labels) <= {str(d) for d in range(10)}
    probabilities = [p for _, p in result["top5"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    out = capsys.readouterr().out
    assert "val top-1" in out and "top-5" in out
    # The exported split is fixed: 1437 / 360 of the 1797 digits.
    assert len(list((tmp_path / "data" / "train").rglob("*.png"))) == 1437
    assert len(list((tmp_path / "data" / "val").rglob("*.png"))) == 360
