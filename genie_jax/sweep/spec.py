"""A sweep's definition (SweepSpec) and its plan: the run folders it makes, each with the exact
`genie-jax train` config and overrides, the shared upstream runs it needs, and its evaluations.

Grid keys are config keys (`model.action_mode`, `lam.mode`, `optim.lr`) given to the run as
`--config.KEY=VALUE`, or config-file knobs written `:KNOB` (`:lam_mode`, which may set several
keys at once, e.g. `lam_mode=true_actions` also sets model.num_actions). Every key is checked
against the loaded ConfigDict, and every run's config is loaded once, before anything runs.

Upstream stages of a dynamics sweep (`upstream={'tokenizer': FILE[:knobs], 'lam': ...}`):
  a key `tokenizer.X` / `lam.X` goes to the dynamics config where it has that key (e.g.
  `lam.model.num_codes`, which also sets model.num_actions by reference) and, as `X`, to the
  upstream config where that one has it (`lam.model.num_codes` -> the LAM's `model.num_codes`;
  `lam.train.steps` only there). Each distinct upstream config becomes one run under
  ROOT/upstream/STAGE/, made once and shared by every run that needs it; runs read it through
  `tokenizer.workdir` / `lam.workdir`. The LAM is needed only when lam.mode is 'frozen'.
  Upstream runs keep their config's seed: the sweep's seeds vary the runs it grids over.
  A stage with no upstream config is read from the workdir the config names (it must exist), and
  a key that would change its model is refused (it would not match that run's checkpoint).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import os
import re

from genie_jax.errors import UserError

VERSION = 1
UPSTREAM_STAGES = ("tokenizer", "lam")
MAX_NAME = 120


# ---- the definition -------------------------------------------------------------------------

@dataclasses.dataclass
class SweepSpec:
    config: str                                    # FILE[:knobs]
    grid: list[tuple[str, list[str]]]              # ordered axes: (key, values)
    seeds: int = 1                                 # seeds 0..seeds-1 (config key `seed`)
    fixed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # every run
    upstream: dict[str, str] = dataclasses.field(default_factory=dict)  # stage -> FILE[:knobs]
    evaluate: bool = True                          # `genie-jax eval` after a dynamics run
    eval_settings: dict[str, str] = dataclasses.field(default_factory=dict)
    eval_grid: list[tuple[str, list[str]]] = dataclasses.field(default_factory=list)
    # grid points left out: each entry {key: value, ...} drops the points having all of them
    exclude: list[dict[str, str]] = dataclasses.field(default_factory=list)
    # `genie-jax actions fit` before evaluating a run with a LAM, so that its evaluation also
    # drives rollouts by the clips' true actions (eval.json `true_actions`)
    fit_actions: bool = False
    # one axis at a time: only the points that differ from the baseline (every axis at its first
    # value) in at most one axis, the usual ablation design (1 + sum(len(axis) - 1) points)
    one_at_a_time: bool = False

    def to_json(self) -> dict:
        return {"version": VERSION, "config": self.config,
                "grid": [[k, list(v)] for k, v in self.grid], "seeds": self.seeds,
                "fixed": [[k, v] for k, v in self.fixed], "upstream": dict(self.upstream),
                "evaluate": self.evaluate, "eval_settings": dict(self.eval_settings),
                "eval_grid": [[k, list(v)] for k, v in self.eval_grid],
                "exclude": [dict(e) for e in self.exclude], "fit_actions": self.fit_actions,
                **({"one_at_a_time": True} if self.one_at_a_time else {})}

    @classmethod
    def from_json(cls, d: dict) -> "SweepSpec":
        return cls(config=d["config"], grid=[(k, list(v)) for k, v in d["grid"]],
                   seeds=int(d["seeds"]), fixed=[(k, v) for k, v in d.get("fixed", [])],
                   upstream=dict(d.get("upstream", {})), evaluate=bool(d.get("evaluate", True)),
                   eval_settings=dict(d.get("eval_settings", {})),
                   eval_grid=[(k, list(v)) for k, v in d.get("eval_grid", [])],
                   exclude=[dict(e) for e in d.get("exclude", [])],
                   fit_actions=bool(d.get("fit_actions", False)),
                   one_at_a_time=bool(d.get("one_at_a_time", False)))


def parse_axis(text: str, flag: str = "--grid") -> tuple[str, list[str]]:
    """'model.action_mode=token,add' -> ('model.action_mode', ['token', 'add'])."""
    key, eq, values = str(text).partition("=")
    key = key.strip()
    vals = [v.strip() for v in values.split(",")]
    if not eq or not key:
        raise UserError(f"{flag}={text!r}: write KEY=VALUE1,VALUE2,...")
    if any(v == "" for v in vals):
        raise UserError(f"{flag}={text!r}: empty value for {key!r}")
    if len(set(vals)) != len(vals):
        raise UserError(f"{flag}={text!r}: a value is repeated")
    return key, vals


def parse_setting(text: str, flag: str = "--set") -> tuple[str, str]:
    key, eq, value = str(text).partition("=")
    if not eq or not key.strip():
        raise UserError(f"{flag}={text!r}: write KEY=VALUE")
    return key.strip(), value.strip()


def parse_exclude(text: str) -> dict[str, str]:
    """'KEY=V KEY2=V2' (space-separated) -> {KEY: V, KEY2: V2}."""
    parts = str(text).split()
    out = dict(parse_setting(p, "--exclude") for p in parts)
    if not out:
        raise UserError(f"--exclude={text!r}: write KEY=VALUE [KEY2=VALUE2 ...]")
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) -> (i, n)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text or "0/1"))
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise UserError(f"--shard={text!r}: write I/N with 0 <= I < N (e.g. 0/4 ... 3/4)")
    return int(m.group(1)), int(m.group(2))


# ---- configs ---------------------------------------------------------------------------------

def split_config(spec: str) -> tuple[str, str]:
    path, _, knobs = str(spec).partition(":")
    return path, knobs


def with_knobs(spec: str, knobs: dict[str, str]) -> str:
    """FILE:a=1,b=2 with `knobs` set (replacing a knob of the same name, keeping the order)."""
    path, arg = split_config(spec)
    parts = [p for p in arg.split(",") if p]
    names = [p.partition("=")[0] for p in parts]
    for k, v in knobs.items():
        if k in names:
            parts[names.index(k)] = f"{k}={v}"
        else:
            parts.append(f"{k}={v}")
            names.append(k)
    return f"{path}:{','.join(parts)}" if parts else path


def load_config(spec: str, overrides: list[tuple[str, str]], where: str):
    """The config exactly as `genie-jax train --config=SPEC --config.K=V ...` builds it."""
    from absl import flags
    from ml_collections import config_flags

    from genie_jax.commands.common import add_config_package_root
    path, _ = split_config(spec)
    if not os.path.isfile(path):
        raise UserError(f"{where}: config file {path!r} does not exist")
    argv = ["genie-jax", f"--config={spec}", *[f"--config.{k}={v}" for k, v in overrides]]
    add_config_package_root(argv)
    fv = flags.FlagValues()
    try:
        holder = config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                                 lock_config=True, sys_argv=argv)
        fv(argv)
        return holder.value
    except flags.Error as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        # a config file's own exception arrives as a traceback: its last line says what
        msg = lines[-1] if "Traceback" in str(e) else " ".join(lines)
        raise UserError(f"{where}: {msg[:400]}") from None
    except Exception as e:  # noqa: BLE001 - a config file that fails to load (e.g. a bad knob)
        raise UserError(f"{where}: could not load {spec!r} ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:300]})") from None


def leaf_keys(cfg, prefix: str = "") -> list[str]:
    out = []
    for k in cfg.keys():
        v = cfg[k]
        if hasattr(v, "keys") and not isinstance(v, dict):
            out += leaf_keys(v, f"{prefix}{k}.")
        elif isinstance(v, dict):
            out += [f"{prefix}{k}.{kk}" for kk in v]
        else:
            out.append(f"{prefix}{k}")
    return out


def has_key(cfg, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node.keys():
            return False
        node = node[part]
    return True


def _no_such_key(key: str, cfg, where: str, extra: str = "") -> UserError:
    close = difflib.get_close_matches(key, leaf_keys(cfg), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return UserError(f"grid key {key!r} does not exist in {where}{hint}{extra}")


# ---- names -----------------------------------------------------------------------------------

def slug(key: str, value: str) -> str:
    """'model.action_mode', 'add' -> 'model.action_mode=add'; characters outside
    [A-Za-z0-9._+-] become '_' and such a name gets a short hash of the original."""
    raw = f"{key.lstrip(':')}={value}"
    clean = re.sub(r"[^A-Za-z0-9._+=-]", "_", raw)
    if clean != raw:
        clean += "-" + hashlib.sha1(raw.encode()).hexdigest()[:6]
    return clean


def join_name(parts: list[str]) -> str:
    name = "__".join(parts) if parts else "base"
    if len(name) > MAX_NAME:
        name = name[:MAX_NAME - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


# ---- the plan --------------------------------------------------------------------------------

@dataclasses.dataclass
class UpstreamPlan:
    stage: str
    name: str
    workdir: str
    config: str
    overrides: list[tuple[str, str]]
    model: dict = dataclasses.field(default_factory=dict, repr=False)  # its model section


@dataclasses.dataclass
class EvalPlan:
    name: str                       # 'eval' or 'eval_steps=4'
    out: str
    point: dict[str, str]           # the eval-only axes' values
    settings: dict[str, str]        # EvalSettings fields (strings, parsed by the runner)


@dataclasses.dataclass
class RunPlan:
    name: str                       # variant + '__seed=S'
    variant: str
    seed: int
    point: dict[str, str]           # grid key -> value
    workdir: str
    stage: str
    config: str                     # FILE[:knobs] with the knob axes applied
    overrides: list[tuple[str, str]]
    total_steps: int
    upstream: list[UpstreamPlan]
    evals: list[EvalPlan]
    fit_actions: bool = False       # `genie-jax actions fit` before the evaluations


@dataclasses.dataclass
class Plan:
    spec: SweepSpec
    root: str
    runs: list[RunPlan]
    upstream: list[UpstreamPlan]    # distinct, in first-use order

    def shard(self, index: int, count: int) -> list[RunPlan]:
        """Runs of worker `index` of `count`: every count-th run of the stable run order."""
        return [r for i, r in enumerate(self.runs) if i % count == index]


def _eval_field_types() -> dict[str, str]:
    from genie_jax.evaluation import EvalSettings
    # grid_clips only shapes the image grid, and `genie-jax eval` has no flag for it
    return {f.name: str(f.type) for f in dataclasses.fields(EvalSettings)
            if f.name != "grid_clips"}


def parse_eval_settings(settings: dict[str, str]):
    """Strings -> genie_jax.evaluation.EvalSettings (a bad key or value is a UserError)."""
    from genie_jax.evaluation import EvalSettings
    types, kw = _eval_field_types(), {}
    for k, v in settings.items():
        if k not in types:
            raise UserError(f"unknown eval setting {k!r} (known: {', '.join(sorted(types))})")
        t = types[k]
        try:
            kw[k] = int(v) if t.startswith("int") else float(v) if t.startswith("float") else v
        except ValueError:
            raise UserError(f"eval setting {k}={v!r} is not {t.split()[0]}") from None
    return EvalSettings(**kw)


def _route(key: str, value: str, stage: str, base, ups: dict, where: str):
    """-> (main override or None, {stage: upstream override})."""
    if key.startswith(":"):
        return None, {}
    if key == "seed":
        raise UserError("grid key 'seed' is the sweep's own axis: use --seeds=N")
    head, _, sub = key.partition(".")
    if stage == "dynamics" and head in UPSTREAM_STAGES and sub:
        if sub == "workdir" and head in ups:
            raise UserError(f"{key} is set by the sweep (it trains {head} from "
                            f"{ups[head][0]}); leave it out")
        in_main = has_key(base, key)
        in_up = head in ups and has_key(ups[head][1], sub)
        if not (in_main or in_up):
            extra = ("" if head in ups else
                     f"; a key of the {head} run itself needs --upstream={head}=FILE[:knobs]")
            raise _no_such_key(key, base, where, extra)
        if head not in ups and sub.startswith("model."):
            raise UserError(f"grid key {key!r} changes the {head} model, but the runs read a "
                            f"finished {head} run ({head}.workdir); give "
                            f"--upstream={head}=FILE[:knobs] so the sweep trains one {head} "
                            f"per value")
        return ((key, value) if in_main else None), ({head: (sub, value)} if in_up else {})
    if not has_key(base, key):
        raise _no_such_key(key, base, where)
    return (key, value), {}


def grid_points(spec: SweepSpec) -> list[dict[str, str]]:
    """The grid's points ({key: value}) in order, less `exclude` and, one_at_a_time, those that
    differ from the baseline (every axis at its first value) in more than one axis."""
    keys = [k for k, _ in spec.grid]
    out = []
    for values in itertools.product(*[vals for _, vals in spec.grid]):
        point = dict(zip(keys, values))
        if any(all(point[k] == v for k, v in ex.items()) for ex in spec.exclude):
            continue
        if spec.one_at_a_time and sum(v != vals[0] for v, (_, vals) in
                                      zip(values, spec.grid)) > 1:
            continue
        out.append(point)
    return out


def build_plan(spec: SweepSpec, root: str) -> Plan:
    """Check everything and lay out every run; nothing is written."""
    root = os.path.abspath(root)
    if not spec.grid:
        raise UserError("empty grid: give at least one --grid=KEY=VALUE1,VALUE2")
    if spec.seeds < 1:
        raise UserError(f"--seeds must be >= 1; got {spec.seeds}")
    keys = [k for k, _ in spec.grid]
    for k in {k for k in keys if keys.count(k) > 1}:
        raise UserError(f"grid key {k!r} is given twice")
    for k, vals in spec.grid:
        if not vals:
            raise UserError(f"grid axis {k!r} has no values")
    axes = dict(spec.grid)
    for ex in spec.exclude:
        for k, v in ex.items():
            if k not in axes or v not in axes[k]:
                raise UserError(f"exclude {k}={v}: not a value of a grid axis "
                                f"({k}: {axes.get(k, 'no such axis')})")
    where = spec.config
    base = load_config(spec.config, [], f"--config={spec.config}")
    stage = str(base.get("stage", ""))
    for s in spec.upstream:
        if s not in UPSTREAM_STAGES:
            raise UserError(f"--upstream={s}=...: upstream stages are {', '.join(UPSTREAM_STAGES)}")
        if stage != "dynamics":
            raise UserError(f"--upstream needs a dynamics config; {spec.config} is a "
                            f"{stage!r} config")
    ups = {s: (c, load_config(c, [], f"--upstream={s}={c}")) for s, c in spec.upstream.items()}
    for s, (c, ucfg) in ups.items():
        if str(ucfg.get("stage", "")) != s:
            raise UserError(f"--upstream={s}={c} is a {ucfg.get('stage')!r} config, not {s!r}")
    routed_fixed = [_route(k, v, stage, base, ups, where) for k, v in spec.fixed]
    for k, _ in spec.fixed:
        if k.startswith(":"):
            raise UserError(f"--set={k}=...: set knobs in --config=FILE:{k[1:]}=VALUE")
    for k, vals in spec.grid:
        for v in vals:
            _route(k, v, stage, base, ups, where)

    evals_axes = list(spec.eval_grid)
    do_eval = spec.evaluate and stage == "dynamics"
    if evals_axes and not do_eval:
        raise UserError("--eval_grid needs a dynamics sweep with evaluation on")
    if do_eval:
        parse_eval_settings(dict(spec.eval_settings))
        for k, vals in evals_axes:
            for v in vals:
                parse_eval_settings({**spec.eval_settings, k: v})

    upstream: dict[tuple, UpstreamPlan] = {}
    runs = []
    for point in grid_points(spec):
        variant = join_name([slug(k, v) for k, v in point.items()])
        knobs = {k[1:]: v for k, v in point.items() if k.startswith(":")}
        cfg_spec = with_knobs(spec.config, knobs) if knobs else spec.config
        main, up_over = [], {s: [] for s in ups}
        for (m, u) in routed_fixed + [_route(k, v, stage, base, ups, where)
                                      for k, v in point.items()]:
            if m:
                main.append(m)
            for s, o in u.items():
                up_over[s].append(o)
        for seed in range(spec.seeds):
            name = f"{variant}__seed={seed}"
            over = main + [("seed", str(seed))]
            cfg = load_config(cfg_spec, over, f"run {name}")
            needs = []
            tok_workdir = str(cfg.tokenizer.workdir) if stage == "dynamics" else ""
            for s in UPSTREAM_STAGES if stage == "dynamics" else ():
                if s == "lam" and str(cfg.lam.mode) != "frozen":
                    continue
                if s not in ups:
                    _check_named_run(cfg, s, name)
                    continue
                over_s = list(up_over[s])
                if s == "lam" and str(cfg.lam.model.get("input", "pixels")) == "tokens":
                    # a token-input LAM reads this run's tokenizer: trained after it, one per
                    # tokenizer (named after it)
                    over_s.append(("tokenizer.workdir", tok_workdir))
                key = (s, tuple(over_s))
                if key not in upstream:
                    uname = join_name([slug(k, v) for k, v in up_over[s]]
                                      + ([slug("tokenizer", _tokenizer_name(tok_workdir, root))]
                                         if len(over_s) > len(up_over[s]) else []))
                    ucfg = load_config(ups[s][0], over_s, f"upstream {s} {uname}")
                    upstream[key] = UpstreamPlan(s, uname, os.path.join(root, "upstream", s, uname),
                                                 ups[s][0], over_s, ucfg.model.to_dict())
                up = upstream[key]
                _check_same_model(up, cfg, s, name)
                needs.append(up)
                over = over + [(f"{s}.workdir", up.workdir)]
                if s == "tokenizer":
                    tok_workdir = up.workdir
            if needs:
                cfg = load_config(cfg_spec, over, f"run {name}")
            workdir = os.path.join(root, "runs", name)
            evals = []
            if do_eval:
                for evalues in itertools.product(*[v for _, v in evals_axes]):
                    epoint = dict(zip([k for k, _ in evals_axes], evalues))
                    ename = "eval" if not epoint else "eval_" + join_name(
                        [slug(k, v) for k, v in epoint.items()])
                    evals.append(EvalPlan(ename, os.path.join(workdir, ename), epoint,
                                          {**spec.eval_settings, **epoint}))
            fit = bool(evals) and spec.fit_actions and str(cfg.lam.mode) != "true_actions"
            runs.append(RunPlan(name, variant, seed, point, workdir, stage, cfg_spec, over,
                                int(cfg.train.steps), needs, evals, fit))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UserError("two grid points got the same run name; use distinct values")
    return Plan(spec, root, runs, list(upstream.values()))


def _tokenizer_name(workdir: str, root: str) -> str:
    """A sweep's own tokenizer by its upstream name, another run by its whole path."""
    ups = os.path.join(root, "upstream", "tokenizer") + os.sep
    return workdir[len(ups):] if workdir.startswith(ups) else os.path.abspath(workdir)


def _check_named_run(cfg, stage: str, run: str) -> None:
    from genie_jax.runs import Run
    workdir = str(cfg[stage].workdir)
    if not Run(workdir).steps():
        raise UserError(f"run {run}: {stage}.workdir={workdir!r} has no checkpoint; train it "
                        f"first, name another with --set={stage}.workdir=DIR, or let the sweep "
                        f"train it with --upstream={stage}=FILE[:knobs]")


def _check_same_model(up: UpstreamPlan, cfg, stage: str, run: str) -> None:
    import json
    want = cfg[stage].model.to_dict()
    diffs = [f"model.{k}: upstream {up.model.get(k)!r}, run expects {want.get(k)!r}"
             for k in sorted(set(want) | set(up.model))
             if json.dumps(want.get(k), default=str) != json.dumps(up.model.get(k), default=str)]
    if diffs:
        raise UserError(f"run {run}: the upstream {stage} config ({up.config} "
                        f"{' '.join(f'{k}={v}' for k, v in up.overrides)}) does not build the "
                        f"{stage} model the dynamics config expects ({'; '.join(diffs[:4])}); "
                        f"grid the key as {stage}.model.KEY so both follow it")
