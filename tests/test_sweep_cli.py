"""`genie-jax sweep` through the command line: one-line errors, the Genie CoinRun sweep file's
plan, and (slow) a real multi-stage sweep of subprocess runs with shared upstream runs."""
import json
import os

import pytest

from genie_jax.errors import UserError
from genie_jax.sweep.report import write_report
from tests.conftest import REPO, run_cli

CFG = os.path.join(REPO, "experiments", "configs")


def test_bad_grid_key_is_one_line_before_anything_runs(tmp_path):
    root = tmp_path / "root"
    p = run_cli(["sweep", f"--config={CFG}/tokenizer.py:size=test", "--grid=model.widht=8,16",
                 f"--root={root}"], check=False)
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "grid key 'model.widht' does not exist" in err[0]
    assert "did you mean model.width" in err[0]
    assert not root.exists()  # nothing written


def test_genie_coinrun_sweep_file_plans_its_runs(tmp_path):
    p = run_cli(["sweep", "--spec=experiments/sweeps/genie_coinrun.py:budget=smoke",
                 f"--root={tmp_path / 'root'}", "--dry_run", "--shard=1/4"])
    lines = p.stdout.strip().splitlines()
    # one change at a time from the baseline (add, frozen, 6 codes, pixel LAM): 8 codes, a token
    # LAM, cotrain, true_actions, token actions; 2 seeds (the inner loop)
    assert lines[-1] == "12 runs, 4 upstream runs; * = shard 1/4"
    runs = [ln for ln in lines if ln[:2] in ("* ", "  ")]
    assert len(runs) == 12 and [i for i, ln in enumerate(runs) if ln.startswith("*")] == [1, 5, 9]
    variants = [ln[2:].split("__seed=")[0] for ln in runs[::2]]
    assert variants == [
        f"action_mode={a}__lam_mode={m}__lam.model.num_codes={n}__lam.model.input={i}"
        for a, m, n, i in (("add", "frozen", 6, "pixels"), ("add", "frozen", 6, "tokens"),
                           ("add", "frozen", 8, "pixels"), ("add", "cotrain", 6, "pixels"),
                           ("add", "true_actions", 6, "pixels"),
                           ("token", "frozen", 6, "pixels"))]
    assert "(actions fit; evals: eval_steps=4, eval_steps=8, eval_steps=25)" in runs[0]
    assert sum("(actions fit;" in ln for ln in runs) == 10  # not the 2 true-action runs
    ups = [ln.split(": ")[0] for ln in lines if ln.startswith("upstream ")]
    assert ups == ["upstream tokenizer base", "upstream lam model.num_codes=6__model.input=pixels",
                   "upstream lam model.num_codes=6__model.input=tokens__tokenizer=base",
                   "upstream lam model.num_codes=8__model.input=pixels"]
    # the token LAM is trained on the sweep's tokenizer
    token_lam = next(ln for ln in lines if ln.startswith(ups[2]))
    tok_dir = tmp_path / "root" / "upstream" / "tokenizer" / "base"
    assert f"--config.tokenizer.workdir={tok_dir}" in token_lam
    # a trained tokenizer run to reuse: no upstream tokenizer, the runs read that one (here
    # missing: named in the error); the sweep file imports experiments.configs from any folder
    sweep_file = os.path.join(REPO, "experiments", "sweeps", "genie_coinrun.py")
    p = run_cli(["sweep", f"--spec={sweep_file}:budget=smoke,tokenizer={tmp_path / 'tok'}",
                 f"--root={tmp_path / 'root'}", "--dry_run"], check=False, cwd=str(tmp_path))
    assert p.returncode != 0 and str(tmp_path / "tok") in p.stderr, p.stderr
    with pytest.raises(UserError, match="holds no sweep.json"):
        write_report(str(tmp_path))


def test_genie_coinrun_sweep_file_passes_the_tokenizer_kind_to_every_stage():
    from experiments.sweeps.genie_coinrun import get_sweep
    plain = get_sweep("budget=smoke")
    assert "temporal" not in plain["config"] + "".join(plain["upstream"].values())
    causal = get_sweep("budget=smoke,tok_temporal=causal")
    assert causal["upstream"]["tokenizer"].endswith(",temporal=causal")
    assert causal["upstream"]["lam"].endswith(",tok_temporal=causal")
    assert causal["config"].endswith(",tok_temporal=causal")
    reuse = get_sweep("budget=smoke,tok_temporal=causal,tokenizer=runs/tok")
    assert "tokenizer" not in reuse["upstream"]
    assert reuse["config"].endswith(",tok_temporal=causal,tokenizer=runs/tok")


@pytest.mark.slow
def test_multistage_sweep_shares_upstream_runs_and_reports(tmp_path):
    root = tmp_path / "sweep"
    fast = ["train.steps=4", "train.eval_every=4", "checkpoint.every=2"]
    args = ["sweep", f"--config={CFG}/dynamics.py:size=test",
            f"--upstream=tokenizer={CFG}/tokenizer.py:size=test",
            f"--upstream=lam={CFG}/lam.py:size=test", "--grid=lam.mode=frozen,cotrain",
            *[f"--set={k}" for k in fast], *[f"--set=tokenizer.{k}" for k in fast],
            *[f"--set=lam.{k}" for k in fast], "--eval_set=episodes=2",
            "--eval_set=rollout_frames=4", "--eval_set=batch_size=2", "--eval_grid=steps=1,2",
            f"--root={root}"]
    p = run_cli(args, timeout=1200)
    assert "2 done now, 0 done before, 0 busy elsewhere, 0 failed" in p.stdout
    up_name = "train.steps=4__train.eval_every=4__checkpoint.every=2"
    for stage in ("tokenizer", "lam"):  # each made once, in one `genie-jax train`
        log = open(root / "upstream" / stage / up_name / "sweep_train.log").read()
        assert log.count("$ genie-jax train") == 1
        assert p.stdout.count(f"upstream {stage} {up_name}: training") == 1
    frozen, cotrain = (root / "runs" / f"lam.mode={m}__seed=0" for m in ("frozen", "cotrain"))
    cfg = json.load(open(frozen / "config.json"))
    assert cfg["lam"]["workdir"] == str(root / "upstream" / "lam" / up_name)
    assert cfg["tokenizer"]["workdir"] == str(root / "upstream" / "tokenizer" / up_name)
    for w in (frozen, cotrain):
        for steps in (1, 2):
            r = json.load(open(w / f"eval_steps={steps}" / "eval.json"))
            assert r["settings"]["maskgit_steps"] == steps and r["settings"]["clips"] == 2
            assert "repeat_last_frame" in r and r["action_probe"] is not None
    p = run_cli(args)  # resumed: nothing left to do
    assert "0 done now, 2 done before" in p.stdout and "training" not in p.stdout
    r = write_report(str(root))
    assert [row["label"] for row in r["rows"]] == [
        "lam.mode=frozen [eval steps=1]", "lam.mode=frozen [eval steps=2]",
        "lam.mode=cotrain [eval steps=1]", "lam.mode=cotrain [eval steps=2]"]
    assert "eval.rollout.psnr" in r["metrics"] and "summary.eval.ce" in r["metrics"]
