"""`genie-jax sweep`: the plan (names, key validation, upstream runs, shards), the root checks,
the report's numbers, and a real tiny sweep killed with SIGKILL and resumed."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from genie_jax.errors import UserError
from genie_jax.sweep.execute import DONE, check_root, claim_root, run_sweep
from genie_jax.sweep.report import write_report
from genie_jax.sweep.spec import SweepSpec, build_plan, parse_axis, parse_shard
from tests.conftest import REPO

CFG = os.path.join(REPO, "experiments", "configs")
TOK = f"{CFG}/tokenizer.py:size=test"
DYN = f"{CFG}/dynamics.py:size=test"
UPSTREAM = {"tokenizer": TOK, "lam": f"{CFG}/lam.py:size=test"}
# a few steps of the test-size tokenizer: every run of the grid is one compiled program
FAST = [("train.steps", "4"), ("train.log_every", "2"), ("train.eval_every", "4"),
        ("checkpoint.every", "2")]


# ---- the plan --------------------------------------------------------------------------------

def test_plan_names_runs_and_shares_upstream_runs(tmp_path):
    spec = SweepSpec(config=DYN, grid=[parse_axis("lam.model.num_codes=6,8"),
                                       parse_axis("lam.mode=frozen,cotrain"),
                                       parse_axis(":action_mode=token,add")],
                     seeds=2, fixed=[("lam.train.steps", "3")], upstream=UPSTREAM,
                     eval_grid=[parse_axis("steps=4,8,25", "--eval_grid")])
    plan = build_plan(spec, str(tmp_path))
    assert len(plan.runs) == 2 * 2 * 2 * 2
    first = plan.runs[0]
    assert first.name == "lam.model.num_codes=6__lam.mode=frozen__action_mode=token__seed=0"
    assert first.variant == "lam.model.num_codes=6__lam.mode=frozen__action_mode=token"
    assert first.workdir == os.path.join(str(tmp_path), "runs", first.name)
    assert first.config.endswith("dynamics.py:size=test,action_mode=token")
    assert [e.name for e in first.evals] == ["eval_steps=4", "eval_steps=8", "eval_steps=25"]
    assert first.evals[2].settings == {"steps": "25"}
    # one tokenizer and one LAM per lam.model.num_codes, each made once; train.steps only there
    ups = {(u.stage, u.name): u for u in plan.upstream}
    assert set(ups) == {("tokenizer", "base"), ("lam", "train.steps=3__model.num_codes=6"),
                        ("lam", "train.steps=3__model.num_codes=8")}
    assert ups[("lam", "train.steps=3__model.num_codes=8")].overrides == [
        ("train.steps", "3"), ("model.num_codes", "8")]
    for r in plan.runs:
        over = dict(r.overrides)
        assert over["seed"] == str(r.seed) and "lam.train.steps" not in over
        stages = {u.stage for u in r.upstream}
        assert stages == ({"tokenizer", "lam"} if r.point["lam.mode"] == "frozen"
                          else {"tokenizer"})
        for u in r.upstream:
            assert over[f"{u.stage}.workdir"] == u.workdir
        if "lam" in stages:  # the LAM with this run's number of codes (the same object)
            lam = next(u for u in r.upstream if u.stage == "lam")
            assert lam is ups[("lam", f"train.steps=3__model.num_codes="
                                      f"{r.point['lam.model.num_codes']}")]
    # the same definition gives the same plan (stable names and order)
    again = build_plan(spec, str(tmp_path))
    assert [r.name for r in again.runs] == [r.name for r in plan.runs]


def test_one_at_a_time_keeps_the_baseline_and_single_changes(tmp_path):
    spec = SweepSpec(config=TOK, grid=[parse_axis("model.num_codes=8,16,32"),
                                       parse_axis("optim.lr=0.001,0.002"),
                                       parse_axis("model.code_dim=4,8")],
                     seeds=2, one_at_a_time=True)
    plan = build_plan(spec, str(tmp_path))
    variants = list(dict.fromkeys(r.variant for r in plan.runs))
    assert variants == ["model.num_codes=8__optim.lr=0.001__model.code_dim=4",
                        "model.num_codes=8__optim.lr=0.001__model.code_dim=8",
                        "model.num_codes=8__optim.lr=0.002__model.code_dim=4",
                        "model.num_codes=16__optim.lr=0.001__model.code_dim=4",
                        "model.num_codes=32__optim.lr=0.001__model.code_dim=4"]
    assert len(plan.runs) == 2 * (1 + 2 + 1 + 1)
    # recorded in the sweep's definition, so a root made without it is another sweep
    assert SweepSpec.from_json(spec.to_json()).one_at_a_time
    assert "one_at_a_time" not in SweepSpec(config=TOK, grid=spec.grid).to_json()


def test_shards_partition_the_runs(tmp_path):
    spec = SweepSpec(config=TOK, grid=[parse_axis("model.num_codes=8,16,32"),
                                       parse_axis("optim.lr=0.001,0.002")], seeds=2)
    plan = build_plan(spec, str(tmp_path))
    shards = [plan.shard(i, 3) for i in range(3)]
    names = [r.name for s in shards for r in s]
    assert sorted(names) == sorted(r.name for r in plan.runs) and len(set(names)) == 12
    assert all(len(s) == 4 for s in shards)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1", "-1/2", "a/b"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize("spec_kw, match", [
    (dict(grid=[("model.num_codez", ["8", "16"])]), r"grid key 'model.num_codez' does not exist"
                                                    r".*did you mean model.num_codes"),
    (dict(grid=[]), "empty grid"),
    (dict(grid=[("model.num_codes", ["8", "x"])]), r"model.num_codes=x.*invalid literal"),
    (dict(grid=[("seed", ["0", "1"])]), "--seeds"),
    (dict(grid=[(":sise", ["test"])]), "unknown config knob 'sise'"),
    (dict(grid=[("model.num_codes", ["8"])], fixed=[("optim.lrr", "1")]), "'optim.lrr'"),
    (dict(grid=[("model.num_codes", ["8"])], upstream=UPSTREAM), "--upstream needs a dynamics"),
])
def test_bad_tokenizer_sweeps_are_refused_naming_the_key(tmp_path, spec_kw, match):
    with pytest.raises(UserError, match=match):
        build_plan(SweepSpec(config=TOK, **spec_kw), str(tmp_path))


@pytest.mark.parametrize("spec_kw, match", [
    # a LAM-model key without a LAM to train: the named run would not match
    (dict(grid=[("lam.model.num_codes", ["6", "8"])]), r"--upstream=lam=FILE"),
    # a key that is neither the dynamics config's nor the upstream config's
    (dict(grid=[("lam.train.stepz", ["1", "2"])], upstream=UPSTREAM),
     r"grid key 'lam.train.stepz' does not exist"),
    # an upstream config that builds another model than the dynamics config expects
    (dict(grid=[("model.depth", ["1"])],
          upstream={**UPSTREAM, "lam": f"{CFG}/lam.py:size=tiny"}), r"does not build the lam"),
    (dict(grid=[("tokenizer.workdir", ["a", "b"])], upstream=UPSTREAM), "set by the sweep"),
    (dict(grid=[("model.depth", ["1"])], eval_settings={"stepz": "2"}, upstream=UPSTREAM),
     "unknown eval setting 'stepz'"),
])
def test_bad_dynamics_sweeps_are_refused(tmp_path, spec_kw, match):
    with pytest.raises(UserError, match=match):
        build_plan(SweepSpec(config=DYN, **spec_kw), str(tmp_path))


def test_a_dynamics_sweep_without_upstream_reads_the_named_runs(tmp_path):
    with pytest.raises(UserError, match=r"tokenizer.workdir='runs/tok' has no checkpoint"):
        build_plan(SweepSpec(config=DYN, grid=[("model.action_mode", ["token", "add"])]),
                   str(tmp_path))


def test_root_holding_another_sweep_is_refused(tmp_path):
    spec = SweepSpec(config=TOK, grid=[("model.num_codes", ["8", "16"])], seeds=2)
    root = str(tmp_path / "root")
    check_root(root, spec)  # a new root
    claim_root(root, spec)
    check_root(root, spec)  # the same sweep again: fine
    other = SweepSpec(config=TOK, grid=[("model.num_codes", ["8", "32"])], seeds=2)
    with pytest.raises(UserError, match=r"holds a different sweep .*grid"):
        check_root(root, other)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("")
    with pytest.raises(UserError, match="holds no sweep.json"):
        check_root(str(tmp_path / "full"), spec)


# ---- the report ------------------------------------------------------------------------------

def _fake_run(root, variant, seed, summary_psnr, rollout_psnr, losses, evals=("eval",)):
    w = root / "runs" / f"{variant}__seed={seed}"
    w.mkdir(parents=True)
    (w / "summary.json").write_text(json.dumps(
        {"step": 4, "total_steps": 4, "stopped_early": False, "train_seconds": 1.0,
         "eval": {"ce": summary_psnr}, "eval_history": [{"step": 4, "ce": 1.0}]}))
    with open(w / "metrics.jsonl", "w") as f:
        for step, loss in zip((2, 4), losses):
            f.write(json.dumps({"step": step, "split": "train", "loss": loss, "lr": 0.1}) + "\n")
        f.write('{"step": 6, "spl')  # a line cut by a kill
    ev = {}
    for name in evals:
        (w / name).mkdir()
        (w / name / "eval.json").write_text(json.dumps(
            {"settings": {"seed": 0},
             "rollout": {"psnr": rollout_psnr, "psnr_per_step": list(range(1, 11))},
             "controllability": {"delta_psnr": rollout_psnr / 10}, "action_nmi": None}))
        ev[name] = {"out": str(w / name), "point": {}}
    (w / DONE).write_text(json.dumps({"variant": variant, "seed": seed, "evals": ev}))
    return w


def test_report_mean_std_and_difference_from_baseline(tmp_path):
    spec = SweepSpec(config=DYN, grid=[("model.action_mode", ["token", "add"])], seeds=3)
    claim_root(str(tmp_path), spec)
    base, add = "model.action_mode=token", "model.action_mode=add"
    w = _fake_run(tmp_path, base, 0, 2.0, 20.0, [3.0, 2.0])
    (w / "action_map.json").write_text(json.dumps(  # `genie-jax actions fit`'s held-out figures
        {"source": "fit", "info": {"heldout": {"accuracy": 0.6, "balanced_accuracy": 0.3}}}))
    _fake_run(tmp_path, base, 1, 4.0, 22.0, [5.0, 4.0])
    _fake_run(tmp_path, add, 0, 1.0, 25.0, [1.0, 1.0])
    (tmp_path / "runs" / f"{add}__seed=1").mkdir()  # unfinished: no sweep_run.json
    r = write_report(str(tmp_path))
    assert r["runs_done"] == 3 and r["runs_expected"] == 6 and r["baseline"] == base
    assert r["metrics"] == ["eval.rollout.psnr", "eval.rollout.psnr_per_step.t4",
                            "eval.rollout.psnr_per_step.t10", "eval.controllability.delta_psnr",
                            "actions.heldout.balanced_accuracy", "summary.eval.ce",
                            "summary.train_seconds"]
    assert r["rows"][0]["stats"]["actions.heldout.balanced_accuracy"] == {
        "mean": 0.3, "std": None, "n": 1, "delta": 0.0}
    assert r["rows"][0]["stats"]["eval.rollout.psnr_per_step.t4"]["mean"] == 4.0
    rows = {row["label"]: row for row in r["rows"]}
    st = rows[base]["stats"]["eval.rollout.psnr"]
    assert st["mean"] == pytest.approx(21.0)
    assert st["std"] == pytest.approx(np.std([20, 22], ddof=1))
    assert st["delta"] == 0
    st = rows[add]["stats"]["eval.rollout.psnr"]
    assert st["mean"] == 25.0 and st["std"] is None and st["delta"] == pytest.approx(4.0)
    assert rows[add]["stats"]["summary.eval.ce"]["delta"] == pytest.approx(-2.0)
    md = open(r["paths"]["md"]).read()
    assert "3 of 6 runs finished" in md and "21 ± 1.414" in md and "Δ +4" in md
    csv_rows = open(r["paths"]["csv"]).read().splitlines()
    assert csv_rows[0].startswith("variant,seeds,eval.rollout.psnr_mean,eval.rollout.psnr_std")
    assert csv_rows[2].startswith(f"{add},0,25,,4,")
    assert sorted(os.path.basename(p) for p in r["paths"]["curves"]) == ["curves_train_loss.png"]
    from PIL import Image
    assert Image.open(r["paths"]["curves"][0]).size == (760, 460)

    r = write_report(str(tmp_path), metrics=["summary.eval.ce"], baseline=add)
    assert rows[base]["stats"]["summary.eval.ce"]["mean"] == 3.0
    assert {row["label"]: row for row in r["rows"]}[base]["stats"]["summary.eval.ce"][
        "delta"] == pytest.approx(2.0)
    with pytest.raises(UserError, match=r"metric\(s\) eval.nope found in no finished run"):
        write_report(str(tmp_path), metrics=["eval.nope"])
    with pytest.raises(UserError, match="--baseline='x' is no finished variant"):
        write_report(str(tmp_path), baseline="x")


def test_report_counts_the_runs_of_a_one_at_a_time_sweep(tmp_path):
    spec = SweepSpec(config=DYN, grid=[("model.action_mode", ["token", "add"]),
                                       ("lam.mode", ["frozen", "cotrain"])], seeds=2,
                     one_at_a_time=True)
    claim_root(str(tmp_path), spec)
    _fake_run(tmp_path, "model.action_mode=add__lam.mode=frozen", 0, 1.0, 20.0, [1.0, 1.0])
    r = write_report(str(tmp_path))
    assert r["runs_done"] == 1 and r["runs_expected"] == 3 * 2  # not the 4 points of the grid


def test_report_of_an_eval_only_axis(tmp_path):
    spec = SweepSpec(config=DYN, grid=[("model.action_mode", ["token"])], seeds=1,
                     eval_grid=[("steps", ["4", "8"])])
    claim_root(str(tmp_path), spec)
    w = "model.action_mode=token"
    _fake_run(tmp_path, w, 0, 1.0, 20.0, [1.0, 1.0], evals=("eval_steps=4", "eval_steps=8"))
    done = json.loads((tmp_path / "runs" / f"{w}__seed=0" / DONE).read_text())
    for name in done["evals"]:
        done["evals"][name]["point"] = {"steps": name.split("=")[1]}
    (tmp_path / "runs" / f"{w}__seed=0" / DONE).write_text(json.dumps(done))
    r = write_report(str(tmp_path))
    assert [row["label"] for row in r["rows"]] == [f"{w} [eval steps=4]", f"{w} [eval steps=8]"]
    assert r["baseline"] == f"{w} [eval steps=4]"


# ---- a real sweep, killed and resumed --------------------------------------------------------

def _sweep_argv(root):
    return ["sweep", f"--config={TOK}", "--grid=data.seed=0,1", f"--root={root}",
            *[f"--set={k}={v}" for k, v in FAST]]


def test_sweep_killed_then_resumed_skips_finished_runs(tmp_path):
    root = tmp_path / "sweep"
    spec = SweepSpec(config=TOK, grid=[("data.seed", ["0", "1"])], fixed=list(FAST))
    first, second = (root / "runs" / f"data.seed={s}__seed=0" for s in (0, 1))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "genie_jax", *_sweep_argv(root), "--inprocess"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not (first / DONE).exists():
            assert proc.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
            assert time.time() < deadline, "the first run did not finish in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    assert not (second / DONE).exists()
    stamp = {p: os.stat(first / p).st_mtime_ns for p in (DONE, "summary.json", "metrics.jsonl")}

    # worker 1 of 2 takes the second run only; worker 0 finds its run done
    out = run_sweep(spec, str(root), shard=(1, 2), inprocess=True, log=lambda m: None)
    assert out.done == [second.name] and not out.failed and not out.skipped
    out = run_sweep(spec, str(root), shard=(0, 2), inprocess=True, log=lambda m: None)
    assert out.skipped == [first.name] and not out.done
    logs = []
    out = run_sweep(spec, str(root), inprocess=True, log=logs.append)
    assert sorted(out.skipped) == sorted([first.name, second.name]) and not out.done
    assert sum("skipped" in m for m in logs) == 2
    assert {p: os.stat(first / p).st_mtime_ns for p in stamp} == stamp  # not touched again
    for w in (first, second):
        s = json.load(open(w / "summary.json"))
        assert s["step"] == 4 and not s["stopped_early"]
        steps = [json.loads(ln)["step"] for ln in open(w / "metrics.jsonl")]
        assert steps == sorted(steps) and steps[-1] == 4  # one uninterrupted log
    r = write_report(str(root))
    assert r["runs_done"] == 2 and "summary.eval.psnr" in r["metrics"]
    assert {row["label"] for row in r["rows"]} == {"data.seed=0", "data.seed=1"}


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    missing = [str(tmp_path / "no_data_a"), str(tmp_path / "no_data_b")]
    spec = SweepSpec(config=TOK, grid=[("data.dir", missing)],
                     fixed=[("data.source", "arrayrecord"), *FAST])
    root = tmp_path / "sweep"
    out = run_sweep(spec, str(root), inprocess=True, log=lambda m: None)
    # values with '/' get a readable name plus a short hash of the value
    assert len(out.failed) == 2 and not out.done
    assert all(n.startswith("data.dir=_") and "no_data_" in n for n in out.failed)
    for name, msg in out.failed.items():
        w = root / "runs" / name
        assert not (w / DONE).exists()
        assert (w / "sweep_error.txt").read_text().startswith(msg)
        assert "no_data" in msg


def test_a_run_trains_fits_actions_then_evaluates_what_is_missing(tmp_path):
    from genie_jax.sweep.execute import _run_one
    from genie_jax.sweep.spec import EvalPlan, RunPlan
    w = tmp_path / "run"
    calls = []

    class Recorder:  # stands in for the trainer / `genie-jax actions fit` / `genie-jax eval`
        def train(self, config, overrides, workdir):
            calls.append("train")
            os.makedirs(workdir, exist_ok=True)
            with open(os.path.join(workdir, "summary.json"), "w") as f:
                json.dump({"step": 4, "stopped_early": False}, f)

        def fit_actions(self, workdir):
            calls.append("fit")
            open(os.path.join(workdir, "action_map.json"), "w").close()

        def evaluate(self, workdir, ev):
            calls.append(ev.name)
            os.makedirs(ev.out)
            open(os.path.join(ev.out, "eval.json"), "w").close()

    evals = [EvalPlan(f"eval_steps={s}", str(w / f"eval_steps={s}"), {"steps": s}, {"steps": s})
             for s in ("4", "8")]
    run = RunPlan("v__seed=0", "v", 0, {}, str(w), "dynamics", DYN, [], 4, [], evals, True)
    _run_one(run, Recorder(), "t", lambda m: None)
    assert calls == ["train", "fit", "eval_steps=4", "eval_steps=8"]
    done = json.load(open(w / DONE))
    assert set(done["seconds"]) == {"train", "actions_fit", "eval_steps=4", "eval_steps=8"}
    # killed after the first evaluation: only the second one is redone
    os.remove(w / DONE)
    os.remove(w / "eval_steps=8" / "eval.json")
    os.rmdir(w / "eval_steps=8")
    calls.clear()
    _run_one(run, Recorder(), "t", lambda m: None)
    assert calls == ["eval_steps=8"] and (w / DONE).exists()
