"""Run a sweep's plan on this machine, one run after another, resumably.

Each run (and each upstream run) is a `genie-jax train` in a subprocess by default: a failed or
crashed run (an error, NaN loss, out of memory) ends only that process, is recorded in
RUN/sweep_error.txt and the sweep goes on; memory and compiled programs are freed between runs;
and a run behaves exactly as the same command typed by hand (its log is RUN/sweep_train.log).
The cost, a Python + JAX start per run (seconds), is small against real runs. `inprocess=True`
calls genie_jax.train.trainer.train and genie_jax.evaluation directly instead (tests; one process
keeps the compiled programs of identical runs).

Resume: a run whose RUN/sweep_run.json exists is skipped; otherwise its training resumes from its
newest checkpoint (a finished training is not repeated) and only the evaluations without an
eval.json are run. A subprocess gets SIGTERM if the sweep process dies (Linux), so a killed sweep
does not leave a trainer running; the trainer saves a checkpoint on SIGTERM.

Shards: worker i of n (`--shard=i/n`) takes every n-th run of the plan's stable order. Upstream
runs are made by whichever worker needs one first, under an exclusive file lock
(ROOT/locks/, fcntl.flock: one host or a shared filesystem with working flock); workers that need
it meanwhile wait for it. A run locked by another worker is skipped, not waited for.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import time
import traceback

from genie_jax.errors import UserError
from genie_jax.media import write_text
from genie_jax.sweep.spec import EvalPlan, Plan, RunPlan, SweepSpec, UpstreamPlan, build_plan

SWEEP_JSON = "sweep.json"
DONE = "sweep_run.json"
ERROR = "sweep_error.txt"
# EvalSettings field -> `genie-jax eval` flag (where the names differ)
EVAL_FLAGS = {"step": "checkpoint_step"}


class RunFailed(Exception):
    pass


# ---- the root --------------------------------------------------------------------------------

def read_sweep_json(root: str) -> dict | None:
    path = os.path.join(root, SWEEP_JSON)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None


def check_root(root: str, spec: SweepSpec) -> None:
    """Refuse a root that holds a different sweep, or other files without a sweep.json."""
    saved = read_sweep_json(root)
    want = spec.to_json()
    if saved is not None:
        diffs = [k for k in sorted(set(saved) | set(want)) if saved.get(k) != want.get(k)]
        if diffs:
            shown = "; ".join(f"{k}: {saved.get(k)!r} there, {want.get(k)!r} here"
                              for k in diffs[:3])
            raise UserError(f"{root} holds a different sweep ({os.path.join(root, SWEEP_JSON)}: "
                            f"{shown}); use another --root, or repeat that sweep's flags")
    elif os.path.isdir(root) and os.listdir(root):
        raise UserError(f"{root} is not empty and holds no {SWEEP_JSON}: not a sweep root; use "
                        f"an empty or new --root")


def claim_root(root: str, spec: SweepSpec) -> None:
    os.makedirs(root, exist_ok=True)
    if read_sweep_json(root) is None:  # shards write the same content: a race is harmless
        write_text(os.path.join(root, SWEEP_JSON), json.dumps(spec.to_json(), indent=2))


# ---- locks -----------------------------------------------------------------------------------

@contextlib.contextmanager
def file_lock(path: str, wait: bool):
    """An exclusive flock on `path` -> yields True, or False when `wait` is off and it is held."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- runners ---------------------------------------------------------------------------------

def _die_with_parent():  # runs in the child before exec (Linux): SIGTERM when the sweep dies
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the child outlives a killed sweep
        pass


class SubprocessRunner:
    """`python -m genie_jax train|eval` per run; output appended to a log in the run folder."""

    def _call(self, args: list[str], log_path: str) -> None:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        cmd = [sys.executable, "-m", "genie_jax", *args]
        with open(log_path, "a") as log:
            log.write(f"\n$ genie-jax {' '.join(args)}\n")
            log.flush()
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                                 preexec_fn=_die_with_parent)
        if rc != 0:
            raise RunFailed(f"genie-jax {args[0]} exited with code {rc}: {_last_error(log_path)}"
                            f" (log: {log_path})")

    def train(self, config: str, overrides, workdir: str) -> None:
        self._call(["train", f"--config={config}", f"--workdir={workdir}",
                    *[f"--config.{k}={v}" for k, v in overrides]],
                   os.path.join(workdir, "sweep_train.log"))

    def fit_actions(self, workdir: str) -> None:
        self._call(["actions", "fit", f"--workdir={workdir}"],
                   os.path.join(workdir, "sweep_actions_fit.log"))

    def evaluate(self, workdir: str, ev: EvalPlan) -> None:
        flags = [f"--{EVAL_FLAGS.get(k, k)}={v}" for k, v in ev.settings.items()]
        self._call(["eval", f"--workdir={workdir}", f"--out={ev.out}", *flags],
                   os.path.join(workdir, f"sweep_{ev.name}.log"))


class InProcessRunner:
    """The trainer and the evaluation called in this process."""

    def train(self, config: str, overrides, workdir: str) -> None:
        from genie_jax.sweep.spec import load_config
        from genie_jax.train.trainer import train
        cfg = load_config(config, list(overrides), workdir)
        summary = train(cfg, workdir)
        if summary.get("stopped_early"):
            raise RunFailed(f"training stopped early at step {summary['step']} "
                            f"(preempted or out of time)")

    def fit_actions(self, workdir: str) -> None:
        from genie_jax.actions_fit import FitSettings, fit
        fit(workdir, FitSettings(), log=lambda m: None)

    def evaluate(self, workdir: str, ev: EvalPlan) -> None:
        from genie_jax.evaluation import evaluate, write_outputs
        from genie_jax.sweep.spec import parse_eval_settings
        results, artifacts = evaluate(workdir, parse_eval_settings(ev.settings), log=lambda m: None)
        write_outputs(ev.out, results, artifacts)


def _last_error(log_path: str) -> str:
    try:
        with open(log_path) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return "?"
    errs = [ln for ln in lines if "error" in ln.lower()]
    return (errs or lines or ["?"])[-1][:300]


# ---- state of a run --------------------------------------------------------------------------

def is_trained(workdir: str, total_steps: int) -> bool:
    try:
        with open(os.path.join(workdir, "summary.json")) as f:
            s = json.load(f)
    except (OSError, ValueError):
        return False
    return int(s.get("step", -1)) >= total_steps and not s.get("stopped_early", False)


def is_done(workdir: str) -> bool:
    return os.path.exists(os.path.join(workdir, DONE))


# ---- the loop --------------------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    done: list = dataclasses.field(default_factory=list)      # finished by this call
    skipped: list = dataclasses.field(default_factory=list)   # finished before
    busy: list = dataclasses.field(default_factory=list)      # locked by another worker
    failed: dict = dataclasses.field(default_factory=dict)    # name -> message


def prepare(spec: SweepSpec, root: str) -> Plan:
    """Validate the whole sweep (nothing written) and check the root."""
    root = os.path.abspath(root)
    check_root(root, spec)
    return build_plan(spec, root)


def run_sweep(spec: SweepSpec, root: str, *, shard=(0, 1), inprocess: bool = False,
              log=print) -> Outcome:
    plan = prepare(spec, root)
    claim_root(plan.root, spec)
    runner = InProcessRunner() if inprocess else SubprocessRunner()
    mine = plan.shard(*shard)
    log(f"sweep: {len(plan.runs)} runs ({len(plan.upstream)} upstream) in {plan.root}; "
        f"shard {shard[0]}/{shard[1]}: {len(mine)} runs")
    out = Outcome()
    failed_up: dict[str, str] = {}
    for i, run in enumerate(mine, 1):
        tag = f"[{i}/{len(mine)}] {run.name}"
        if is_done(run.workdir):
            out.skipped.append(run.name)
            log(f"{tag}: done before, skipped")
            continue
        with file_lock(os.path.join(plan.root, "locks", f"run-{run.name}.lock"), wait=False) as got:
            if not got:
                out.busy.append(run.name)
                log(f"{tag}: being run by another worker, skipped")
                continue
            if is_done(run.workdir):  # finished by another worker while we looked
                out.skipped.append(run.name)
                continue
            try:
                for up in run.upstream:
                    if up.workdir in failed_up:
                        raise RunFailed(f"upstream {up.stage} {up.name} failed: "
                                        f"{failed_up[up.workdir]}")
                    try:
                        _ensure_upstream(plan, up, runner, log)
                    except RunFailed as e:
                        failed_up[up.workdir] = str(e)
                        raise
                _run_one(run, runner, tag, log)
                out.done.append(run.name)
            except (RunFailed, UserError, Exception) as e:  # noqa: BLE001 - one run, not the sweep
                msg = str(e) if isinstance(e, (RunFailed, UserError)) else \
                    f"{type(e).__name__}: {e}"
                os.makedirs(run.workdir, exist_ok=True)
                detail = "" if isinstance(e, (RunFailed, UserError)) else traceback.format_exc()
                write_text(os.path.join(run.workdir, ERROR), msg + "\n" + detail)
                out.failed[run.name] = msg
                log(f"{tag}: FAILED: {msg}")
    log(f"sweep shard {shard[0]}/{shard[1]}: {len(out.done)} done now, {len(out.skipped)} done "
        f"before, {len(out.busy)} busy elsewhere, {len(out.failed)} failed")
    return out


def _ensure_upstream(plan: Plan, up: UpstreamPlan, runner, log) -> None:
    lock = os.path.join(plan.root, "locks", f"upstream-{up.stage}-{up.name}.lock")
    if is_done(up.workdir):
        return
    with file_lock(lock, wait=True):
        if is_done(up.workdir):  # made by another worker while we waited
            return
        log(f"upstream {up.stage} {up.name}: training")
        t0 = time.perf_counter()
        try:
            runner.train(up.config, up.overrides, up.workdir)
        except (UserError, RunFailed) as e:
            raise RunFailed(f"upstream {up.stage} {up.name}: {e}") from None
        _mark_done(up.workdir, {"stage": up.stage, "name": up.name, "config": up.config,
                                "overrides": up.overrides,
                                "seconds": round(time.perf_counter() - t0, 1)})
        log(f"upstream {up.stage} {up.name}: done in {time.perf_counter() - t0:.1f} s")


def _run_one(run: RunPlan, runner, tag: str, log) -> None:
    seconds = {}
    t0 = time.perf_counter()
    if not is_trained(run.workdir, run.total_steps):
        log(f"{tag}: training ({run.workdir})")
        runner.train(run.config, run.overrides, run.workdir)
        if not is_trained(run.workdir, run.total_steps):
            raise RunFailed(f"training ended before step {run.total_steps} "
                            f"(see {run.workdir}/summary.json)")
    seconds["train"] = round(time.perf_counter() - t0, 1)
    if run.fit_actions and not os.path.exists(os.path.join(run.workdir, "action_map.json")):
        t1 = time.perf_counter()
        log(f"{tag}: actions fit")
        runner.fit_actions(run.workdir)
        seconds["actions_fit"] = round(time.perf_counter() - t1, 1)
    for ev in run.evals:
        if os.path.exists(os.path.join(ev.out, "eval.json")):
            continue
        t1 = time.perf_counter()
        log(f"{tag}: {ev.name}")
        runner.evaluate(run.workdir, ev)
        seconds[ev.name] = round(time.perf_counter() - t1, 1)
    if os.path.exists(os.path.join(run.workdir, ERROR)):
        os.remove(os.path.join(run.workdir, ERROR))  # an earlier failure, now fixed
    _mark_done(run.workdir, {"name": run.name, "variant": run.variant, "seed": run.seed,
                             "point": run.point, "config": run.config,
                             "overrides": run.overrides,
                             "upstream": {u.stage: u.workdir for u in run.upstream},
                             "evals": {e.name: {"out": e.out, "point": e.point}
                                       for e in run.evals},
                             "seconds": seconds})
    log(f"{tag}: done ({', '.join(f'{k} {v:.1f} s' for k, v in seconds.items())})")


def _mark_done(workdir: str, record: dict) -> None:
    record = dict(record, finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_text(os.path.join(workdir, DONE), json.dumps(record, indent=2))
