"""The shared unit runner: resuming, and its one removal policy (genie_jax/data/staging.py)."""
import functools
import os

import numpy as np
import pytest

from genie_jax.data import shards, staging
from tests.data.helpers import tagged_episode

WRITER = dict(frame_shape=(8, 8, 3), fractions=shards.parse_fractions("1,0,0"), record_frames=4)


def _fill(unit, writer, fail=()):
    """Episodes whose ids are the unit's key; a unit named in `fail` dies after writing records."""
    for e in unit.key:
        frames, actions = tagged_episode(e, 10)
        writer.begin_episode(dict(source=f"tagged{e}", seed=e))
        writer.add(frames, actions)
        writer.end_episode()
        if unit.name in fail:
            raise RuntimeError(f"boom in {unit.name}")


def _run(out, units, fill=_fill, **kw):
    return staging.run_units(out, units, fill, options=dict(test=1), writer_args=WRITER,
                             key_field="seeds", progress=False, log=lambda msg: None, **kw)


def _units(plan):
    return [staging.Unit(name, key=list(key), meta=dict(generator="tagged")) for name, key in plan]


def _seeds(out):
    src = shards.open_source(out, "train")
    return sorted(src.metadata(e)["seed"] for e in range(len(src)))


def _staged(out):
    return sorted(os.listdir(os.path.join(out, shards.STAGING_DIR)))


def test_failed_unit_leaves_nothing_and_is_redone_next_run(tmp_path):
    out = str(tmp_path)
    units = _units([("g-b0", [0, 1]), ("g-b1", [2]), ("g-b2", [3])])
    logged = []
    run = staging.run_units(out, units, functools.partial(_fill, fail={"g-b1"}),
                            options=dict(test=1), writer_args=WRITER, key_field="seeds",
                            workers=2, processes=False, progress=False, log=logged.append)
    assert (run.written, run.already_done, run.episodes, run.frames) == (2, 0, 3, 30)
    assert [(u.name, why) for u, why in run.skipped] == [("g-b1", "boom in g-b1")]
    assert logged == ["skipped g-b1: boom in g-b1"]
    assert not [n for n in _staged(out) if n.startswith("g-b1") or ".tmp-" in n]
    assert _seeds(out) == [0, 1, 3]
    before = {n: os.stat(os.path.join(out, shards.STAGING_DIR, n)).st_mtime_ns
              for n in _staged(out)}
    run = _run(out, units)
    assert (run.written, run.already_done, run.skipped, run.episodes) == (1, 2, [], 4)
    assert _seeds(out) == [0, 1, 2, 3]
    for name, mtime in before.items():  # finished units were not rewritten
        assert os.stat(os.path.join(out, shards.STAGING_DIR, name)).st_mtime_ns == mtime, name


def test_stale_and_unplanned_owned_units_are_removed(tmp_path):
    out = str(tmp_path)
    _run(out, _units([("g-b0", [0, 1]), ("g-b1", [2, 3]), ("kept", [9])]))
    # Re-planned block (other key) is redone; the block the plan dropped goes, manifest and
    # shards; a unit outside the owned prefix stays.
    run = _run(out, _units([("g-b0", [0])]), owned_prefix="g-b")
    assert (run.written, run.already_done) == (1, 0)
    assert _staged(out) == ["g-b0.json", "g-b0.train.array_record", "kept.json",
                            "kept.train.array_record", "options.json"]
    assert _seeds(out) == [0, 9]
    # Without an owner prefix (convert: earlier inputs stay) nothing unplanned is removed.
    run = _run(out, _units([("g-b0", [0])]))
    assert (run.written, run.already_done) == (0, 1)
    assert _seeds(out) == [0, 9]


def test_a_new_run_removes_what_a_killed_run_left(tmp_path):
    out = str(tmp_path)
    stage = os.path.join(out, shards.STAGING_DIR)
    os.makedirs(os.path.join(stage, "g-b0.tmp-dead"))  # a generator's scratch folder
    open(os.path.join(stage, "g-b0.tmp-dead", "x.npz"), "wb").close()
    open(os.path.join(stage, "g-b0.train.array_record.tmp-dead"), "wb").close()
    _run(out, _units([("g-b0", [0])]))
    assert _staged(out) == ["g-b0.json", "g-b0.train.array_record", "options.json"]


def test_interrupt_aborts_the_unit_and_propagates(tmp_path):
    out = str(tmp_path)

    def interrupted(unit, writer):
        _fill(unit, writer)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(out, _units([("g-b0", [0])]), fill=interrupted)
    assert _staged(out) == ["options.json"]


def test_other_options_are_refused(tmp_path):
    out = str(tmp_path)
    _run(out, _units([("g-b0", [0])]))
    with pytest.raises(shards.DatasetError, match="different options"):
        staging.run_units(out, [], _fill, options=dict(test=2), writer_args=WRITER,
                          key_field="seeds", progress=False)
    np.testing.assert_array_equal(_seeds(out), [0])
