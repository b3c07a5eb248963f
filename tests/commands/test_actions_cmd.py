"""`genie-jax actions fit|show` and `genie-jax sample --actions=NAMES` on a fake dynamics run
(random params) and a tiny CoinRun-like ArrayRecord dataset with true actions."""
import json
import os
import shutil

import numpy as np
import pytest

from genie_jax.action_map import FILENAME
from genie_jax.data import shards
from genie_jax.data.games import COINRUN_ACTION_CLASSES, COINRUN_CLASS_NAMES
from tests.conftest import run_cli
from tests.stages.helpers import save_fake_pipeline

LENGTHS = {"val": [12, 9, 14], "test": [10, 11]}


def write_game_data(out_dir: str, hw: int = 16, source: str = "procgen:coinrun",
                    with_actions: bool = True) -> dict:
    """Random frames, random procgen actions 0..14; one unit per split. -> {split: [actions]}."""
    staging = os.path.join(out_dir, shards.STAGING_DIR)
    rng = np.random.default_rng(0)
    out = {}
    for split, lengths in LENGTHS.items():
        fr = shards.parse_fractions({"val": "0,1,0", "test": "0,0,1"}[split])
        w = shards.UnitWriter(staging, f"u-{split}", (hw, hw, 3), fractions=fr, record_frames=4)
        out[split] = []
        for n in lengths:
            a = rng.integers(0, 15, n).astype(np.int32)
            w.begin_episode(dict(source=source, fps=15.0))
            w.add(rng.integers(0, 256, (n, hw, hw, 3), dtype=np.uint8),
                  a if with_actions else None)
            w.end_episode()
            out[split].append(a)
        w.commit()
    shards.finalize(out_dir)
    return out


@pytest.fixture(scope="module")
def fake_dyn(tmp_path_factory):
    return save_fake_pipeline(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def dyn(fake_dyn, tmp_path):
    """A copy of the fake dynamics run (its config names the tokenizer/LAM runs by path)."""
    return shutil.copytree(fake_dyn, str(tmp_path / "dyn"))


@pytest.fixture(scope="module")
def coinrun_data(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("coinrun"))
    return d, write_game_data(d)


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_fit_on_coinrun_data_matches_the_lam(dyn, coinrun_data):
    data, actions = coinrun_data
    proc = run_cli(["actions", "fit", f"--workdir={dyn}", f"--data={data}", "--batch_size=4"])
    assert "held-out 'test': 19 transitions" in proc.stdout and FILENAME in proc.stdout
    m = json.load(open(os.path.join(dyn, FILENAME)))
    assert m["source"] == "fit" and m["num_actions"] == 6 and m["info"]["kind"] == "coinrun"
    names = [c["name"] for c in m["controls"]]
    assert names == [n for n in COINRUN_CLASS_NAMES if n in names]  # display order kept
    counts = np.array(m["info"]["fit"]["counts"])
    assert counts.sum() == m["info"]["fit"]["transitions"] == sum(LENGTHS["val"]) - 3

    # The same table from the LAM directly: whole episodes, windows of the run's 4 frames.
    from genie_jax.evaluation import infer_actions_windowed
    from genie_jax.sampling import WorldModel
    wm = WorldModel.load(dyn)
    src = shards.open_source(data, "val")
    want = np.zeros((6, 6), np.int64)
    for e, a in enumerate(actions["val"]):
        frames = src.read_window(e, 0, len(a))["frames"][None]
        latent = infer_actions_windowed(wm.infer_actions, frames, 4)[0]
        np.add.at(want, (COINRUN_ACTION_CLASSES[a[:-1]], latent), 1)
    np.testing.assert_array_equal(counts, want)
    for c in m["controls"]:  # each control's latent was seen with it
        assert want[COINRUN_CLASS_NAMES.index(c["name"]), c["latent"]] > 0
    h = m["info"]["heldout"]
    assert h["transitions"] == sum(LENGTHS["test"]) - 2 and m["accuracy"] == h["accuracy"]
    assert 0 <= h["accuracy"] <= 1 and 0 < h["chance"] <= 1

    show = run_cli(["actions", "show", f"--workdir={dyn}"])
    assert f"{len(names)} controls, 6 latent actions" in show.stdout
    assert "keys ArrowLeft a 1" in show.stdout or "LEFT" not in names


def test_fit_on_the_runs_procedural_data_then_sample_by_name(dyn, tmp_path):
    from genie_jax.actions_fit import FitSettings, fit
    amap, r = fit(dyn, FitSettings(), log=lambda *a: None)
    assert r["kind"] == "procedural" and r["heldout"]["split"] == "test"
    assert set(amap.names) <= {"NOOP", "LEFT", "RIGHT", "UP", "DOWN"} and "RIGHT" in amap.names
    gif = str(tmp_path / "s.gif")
    proc = run_cli(["sample", f"--workdir={dyn}", f"--out={gif}", "--actions=RIGHT,right,UP,2",
                    "--steps=1"])
    ids = amap.parse("RIGHT,RIGHT,UP,2")
    assert f"(latent {','.join(map(str, ids))})" in proc.stdout and os.path.getsize(gif) > 0
    names = ",".join(amap.name_of(a) for a in ids)
    assert f"actions {names} (latent" in proc.stdout
    bad = run_cli(["sample", f"--workdir={dyn}", f"--out={tmp_path}/x.gif", "--actions=RIGHT,JUMP"],
                  check=False)
    err = _one_line_error(bad)
    assert "unknown action 'JUMP'; known: " in err and "RIGHT" in err
    assert not os.path.exists(tmp_path / "x.gif")


def test_bad_action_map_file_is_one_line_naming_file_and_key(dyn, tmp_path):
    with open(os.path.join(dyn, FILENAME), "w") as f:
        json.dump({"version": 1, "source": "fit", "num_actions": 6, "keys": {},
                   "controls": [{"name": "LEFT", "latent": 9}]}, f)
    proc = run_cli(["sample", f"--workdir={dyn}", f"--out={tmp_path}/x.gif", "--actions=LEFT"],
                   check=False)
    err = _one_line_error(proc)
    assert os.path.join(dyn, FILENAME) in err and "controls[0].latent" in err


def test_cli_errors(dyn, coinrun_data, tmp_path):
    data, _ = coinrun_data
    assert "usage: genie-jax actions {fit|show}" in _one_line_error(
        run_cli(["actions", f"--workdir={dyn}"], check=False))
    assert "needs --workdir" in _one_line_error(run_cli(["actions", "fit"], check=False))
    assert "--eval_split must differ from --split ('val')" in _one_line_error(
        run_cli(["actions", "fit", f"--workdir={dyn}", "--eval_split=val"], check=False))
    # in-process for speed: the same UserErrors the CLI prints as one line
    from genie_jax.actions_fit import FitSettings, fit
    from genie_jax.errors import UserError
    small = str(tmp_path / "small")
    write_game_data(small, hw=8)
    with pytest.raises(UserError, match=r"has frames \(8, 8, 3\) but the run's LAM takes "
                       r"\(16, 16, 3\)"):
        fit(dyn, FitSettings(data=small))
    none = str(tmp_path / "none")
    write_game_data(none, with_actions=False)
    with pytest.raises(UserError, match="episodes without true actions: a run without them "
                       "keeps numbered latent actions"):
        fit(dyn, FitSettings(data=none))
    with pytest.raises(UserError, match="has no episodes in split 'train'"):
        fit(dyn, FitSettings(data=data, split="train"))
    with pytest.raises(UserError, match="does not exist"):
        fit(dyn, FitSettings(data=str(tmp_path / "nowhere")))
    assert not os.path.exists(os.path.join(dyn, FILENAME))  # nothing written by a failed fit
