"""summary.json of a resumed run keeps the evaluations and time of the segments before it."""
import json

from genie_jax.train.trainer import _merge_earlier_segments


def _summary(step, seconds, evals):
    return {"step": step, "train_seconds": seconds,
            "eval_history": [{"step": s, "psnr": p} for s, p in evals]}


def test_resumed_summary_merges_the_earlier_segment(tmp_path):
    path = tmp_path / "summary.json"
    first = _summary(1600, 100.0, [(800, 20.0), (1600, 25.0)])
    _merge_earlier_segments(first, str(path), start=0)
    assert first["train_seconds_all_segments"] == 100.0
    path.write_text(json.dumps(first))
    second = _summary(3200, 90.0, [(2400, 27.0), (3200, 28.0)])
    _merge_earlier_segments(second, str(path), start=1600)
    assert [h["step"] for h in second["eval_history"]] == [800, 1600, 2400, 3200]
    assert second["train_seconds_all_segments"] == 190.0
    path.write_text(json.dumps(second))
    third = _summary(3200, 0.0, [(3200, 28.0)])  # resumed at its end: evaluates again only
    _merge_earlier_segments(third, str(path), start=3200)
    assert [h["step"] for h in third["eval_history"]] == [800, 1600, 2400, 3200]
    assert third["train_seconds_all_segments"] == 190.0


def test_summary_of_a_later_lost_segment_is_not_merged(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(_summary(5000, 50.0, [(5000, 30.0)])))
    s = _summary(4500, 10.0, [(4500, 29.0)])  # restarted from an older checkpoint
    _merge_earlier_segments(s, str(path), start=4000)
    assert [h["step"] for h in s["eval_history"]] == [4500]
    assert s["train_seconds_all_segments"] == 10.0
