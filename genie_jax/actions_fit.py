"""`genie-jax actions fit`: name a run's latent actions after the game's own controls.

Where the data has true actions, every transition t -> t+1 of a split gets a pair (true control,
latent action the run's LAM assigns to it). Controls are the game's own: CoinRun's 6 behavioural
classes of its 15 procgen actions, Atari's ALE action names (episode metadata `action_names`),
the procedural world's 5 moves; other datasets with true actions get ACTION_<id>.

From the counts table of the fit split (counts[control, latent]):
  control -> latent   the latent that best predicts the control: argmax over the latents seen
                      with it of P(control | latent), shrunk towards P(control) by a prior of
                      PRIOR transitions so that a rarely used latent cannot win on a few counts.
                      (Majority vote, argmax P(latent | control), sends every control to the
                      LAM's most used code when one code dominates, as CoinRun's does.)
  latent -> control   argmax P(control | latent) (unseen latents: the most common control): the
                      predictor whose accuracy is reported on a held-out split, next to the
                      chance level (always predicting the fit split's most common control).
                      When one control dominates (CoinRun: NOOP is 8 of the 15 procgen actions)
                      that predictor may always say it; so also the balanced accuracy (mean
                      per-control recall; chance 1 / controls) of the predictor for balanced
                      classes, argmax P(latent | control).
The map (and all these numbers) is saved atomically in WORKDIR/action_map.json (ActionMap).
"""
from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from genie_jax.action_map import ActionMap, default_keys
from genie_jax.errors import UserError

PRIOR = 10.0  # transitions of shrinkage towards P(control) (see module docstring)


@dataclasses.dataclass
class FitSettings:
    data: str | None = None     # a genie_jax dataset dir (default: the run's data)
    split: str = "val"          # fit the map here
    eval_split: str = "test"    # report held-out accuracy here ('' to skip)
    episodes: int = 0           # episodes per split (0: all)
    batch_size: int = 32        # LAM windows per call
    step: int | None = None     # checkpoint step (default: newest)


@dataclasses.dataclass(frozen=True)
class Controls:
    """The true controls of a dataset and how its recorded actions map onto them."""
    kind: str                   # 'coinrun' | 'atari' | 'procedural' | 'ids'
    names: tuple[str, ...]
    table: np.ndarray | None    # recorded action id -> control id (None: identity)

    def classify(self, actions) -> np.ndarray:
        """Recorded actions -> control ids (-1 where unknown)."""
        a = np.asarray(actions, np.int64)
        n = len(self.names) if self.table is None else len(self.table)
        ok = (a >= 0) & (a < n)
        out = np.full(a.shape, -1, np.int64)
        out[ok] = a[ok] if self.table is None else self.table[a[ok]]
        return out


def _source_name(source, episode: int) -> str:
    from genie_jax.evaluation import episode_source_name
    return episode_source_name(source, episode)


def controls_of(source, episodes, where: str) -> Controls:
    """The game's controls, from the episodes' recorded source (one game per dataset)."""
    from genie_jax.data.games import COINRUN_ACTION_CLASSES, COINRUN_CLASS_NAMES
    from genie_jax.evaluation import is_coinrun
    names = {_source_name(source, e) for e in episodes}
    if all(is_coinrun(n) for n in names):
        return Controls("coinrun", tuple(COINRUN_CLASS_NAMES),
                        np.asarray(COINRUN_ACTION_CLASSES, np.int64))
    if names == {"procedural"}:
        from genie_jax.data.procedural import ACTION_NAMES
        return Controls("procedural", tuple(ACTION_NAMES), None)
    if all(n.startswith("ale:") for n in names):
        if len(names) > 1:
            raise UserError(f"{where} mixes Atari games {sorted(names)}; fit one game at a time")
        sets = {tuple(source.metadata(e).get("action_names") or ()) for e in episodes}
        if len(sets) != 1 or not next(iter(sets)):
            raise UserError(f"{where}: the episodes of {names.pop()} do not all record the same "
                            "action_names metadata")
        return Controls("atari", next(iter(sets)), None)
    if len(names) > 1 and any(is_coinrun(n) or n.startswith("ale:") for n in names):
        raise UserError(f"{where} mixes games {sorted(names)}; fit one game at a time")
    return Controls("ids", (), None)  # names come from the action ids seen (ACTION_<id>)


def _open(cfg, data_dir: str | None, split: str):
    from genie_jax.evaluation import open_split
    return open_split(cfg, split, data_dir)


def transition_pairs(wm, source, episodes, window: int, batch_size: int,
                     controls: Controls) -> tuple[np.ndarray, np.ndarray, dict]:
    """LAM latent action and true control of every transition of `episodes` (episodes shorter
    than `window` are skipped: one window shape, one compile). Transitions whose true action is
    unknown (< 0) are dropped. -> (latent_X, control_X, stats)."""
    from genie_jax.evaluation import window_starts
    lengths = source.episode_lengths()
    used = [e for e in episodes if lengths[e] >= window]
    latents, trues, pending = [], [], []  # pending: (episode index in `used`, start, frames)
    per_episode = {i: np.full(int(lengths[e]) - 1, -1, np.int64) for i, e in enumerate(used)}

    def flush():
        if not pending:
            return
        batch = np.stack([p[2] for p in pending])
        if len(batch) < batch_size:  # pad to the one compiled batch shape
            batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - len(batch), 0)])
        codes = np.asarray(wm.infer_actions(batch))
        for (i, s, _), c in zip(pending, codes):
            per_episode[i][s:s + window - 1] = c
        pending.clear()

    for i, e in enumerate(used):
        ep = source.read_window(int(e), 0, int(lengths[e]))  # the EpisodeSource protocol
        frames, actions = np.asarray(ep["frames"], np.uint8), ep.get("actions")
        if actions is None:
            actions = np.full(len(frames), -1, np.int64)
        trues.append(controls.classify(np.asarray(actions)[:-1]))  # actions[t]: t -> t+1
        for s in window_starts(len(frames), window):
            pending.append((i, s, frames[s:s + window]))
            if len(pending) == batch_size:
                flush()
    flush()
    for i in range(len(used)):
        latents.append(per_episode[i])
    latent = np.concatenate(latents) if latents else np.zeros(0, np.int64)
    true = np.concatenate(trues) if trues else np.zeros(0, np.int64)
    known = true >= 0
    stats = {"episodes": len(used), "episodes_too_short": len(episodes) - len(used),
             "transitions": int(len(true)), "unknown_actions": int((~known).sum())}
    return latent[known], true[known], stats


def counts_table(latent_X, control_X, num_controls: int, num_actions: int) -> np.ndarray:
    """counts[control, latent] of the transition pairs."""
    t = np.zeros((num_controls, num_actions), np.int64)
    np.add.at(t, (control_X, latent_X), 1)
    return t


def control_latents(counts_KA: np.ndarray, prior: float = PRIOR) -> np.ndarray:
    """Latent per control (-1 for controls never seen): argmax over latents seen with the control
    of the shrunk P(control | latent); ties go to the latent seen most often with it."""
    total = counts_KA.sum()
    p_k = counts_KA.sum(1) / max(total, 1)
    post = (counts_KA + prior * p_k[:, None]) / (counts_KA.sum(0)[None] + prior)  # [K, A]
    out = np.full(len(counts_KA), -1, np.int64)
    for k in range(len(counts_KA)):
        seen = counts_KA[k] > 0
        if seen.any():
            score = np.where(seen, post[k], -np.inf)
            best = np.flatnonzero(score == score.max())
            out[k] = best[np.argmax(counts_KA[k, best])]
    return out


def latent_decoder(counts_KA: np.ndarray) -> np.ndarray:
    """Control predicted for each latent: the most common control among its transitions (a
    latent never seen: the most common control overall)."""
    majority = int(np.argmax(counts_KA.sum(1)))
    return np.where(counts_KA.sum(0) > 0, np.argmax(counts_KA, axis=0), majority)


def balanced_decoder(counts_KA: np.ndarray) -> np.ndarray:
    """Control predicted for each latent when every control is equally likely a priori:
    argmax over the controls seen of P(latent | control)."""
    rows = counts_KA.sum(1, keepdims=True)
    p_a_given_k = np.where(rows > 0, counts_KA / np.maximum(rows, 1), -1.0)
    return np.argmax(p_a_given_k, axis=0)


def accuracy_report(decoder_A: np.ndarray, balanced_A: np.ndarray, majority: int, latent_X,
                    control_X, num_controls: int) -> dict:
    """Accuracy of predicting the true control from the latent (decoder_A), and the balanced
    accuracy (balanced_A), with their chance levels."""
    if len(control_X) == 0:
        return {"transitions": 0, "accuracy": None, "chance": None,
                "balanced_accuracy": None, "balanced_chance": None}
    pred, pred_b = decoder_A[latent_X], balanced_A[latent_X]
    present = [k for k in range(num_controls) if (control_X == k).any()]
    recall = [float(np.mean(pred_b[control_X == k] == k)) for k in present]
    return {"transitions": int(len(control_X)),
            "accuracy": float(np.mean(pred == control_X)),
            "chance": float(np.mean(control_X == majority)),
            "balanced_accuracy": float(np.mean(recall)),
            "balanced_chance": 1.0 / len(present)}


def fit(workdir: str, s: FitSettings, log=print) -> tuple[ActionMap, dict]:
    """-> (the fitted ActionMap, a report); saves WORKDIR/action_map.json."""
    from genie_jax.evaluation import load_world_model
    t0 = time.perf_counter()
    if s.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1; got {s.batch_size}")
    if s.episodes < 0:
        raise UserError(f"--episodes must be >= 0 (0: all); got {s.episodes}")
    if s.eval_split and s.eval_split == s.split:
        raise UserError(f"--eval_split must differ from --split ({s.split!r}): the accuracy is "
                        "held-out; pass --eval_split='' to skip it")
    if s.data and not os.path.isdir(s.data):
        raise UserError(f"--data={s.data!r} does not exist")
    wm = load_world_model(workdir, step=s.step)
    if "lam" not in wm.params:
        raise UserError(f"{workdir}: the run has no LAM params; cannot infer latent actions")
    cfg, A = wm.config, int(wm.dynamics.num_actions)
    where = s.data or (str(cfg.data.dir) if cfg.data.source == "arrayrecord" else
                       f"the run's {cfg.data.source} data")
    window = max(2, min(int(cfg.data.num_frames), int(wm.lam.max_frames)))

    def pairs(split):
        src = _open(cfg, s.data, split)
        if not src.has_actions:
            raise UserError(f"split {split!r} of {where} has episodes without true actions: "
                            "a run without them keeps numbered latent actions")
        n = len(src.episode_lengths())
        eps = list(range(n if not s.episodes else min(n, s.episodes)))
        if not eps:
            raise UserError(f"split {split!r} of {where} has no episodes")
        shape, want = tuple(src.frame_shape), (*wm.lam.image_size, wm.lam.channels)
        if shape != tuple(want):
            raise UserError(f"{where} has frames {tuple(shape)} but the run's LAM takes {want}")
        ctl = controls_of(src, eps, f"split {split!r} of {where}")
        latent, true, stats = transition_pairs(wm, src, eps, window, s.batch_size, ctl)
        if ctl.kind == "ids" and len(true) == 0:
            raise UserError(f"split {split!r} of {where} has no true actions: a run without them "
                            "keeps numbered latent actions")
        return ctl, latent, true, stats

    ctl, latent, true, fit_stats = pairs(s.split)
    if len(true) == 0:
        raise UserError(f"split {s.split!r} of {where} has no transition with a known true action "
                        f"in episodes of >= {window} frames")
    names = ctl.names or tuple(f"ACTION_{i}" for i in range(int(true.max()) + 1))
    K = len(names)
    log(f"actions fit: {fit_stats['transitions']} transitions of {fit_stats['episodes']} "
        f"{s.split!r} episodes ({ctl.kind}: {K} controls, {A} latent actions, LAM window {window})")
    counts = counts_table(latent, true, K, A)
    per_control = control_latents(counts)
    decoder, balanced = latent_decoder(counts), balanced_decoder(counts)
    majority = int(np.argmax(counts.sum(1)))
    report = {"workdir": os.path.abspath(workdir), "data": where, "kind": ctl.kind,
              "controls": list(names), "num_actions": A, "lam_window": window, "prior": PRIOR,
              "fit": {"split": s.split, **fit_stats, "counts": counts.tolist(),
                      **accuracy_report(decoder, balanced, majority, latent, true, K)},
              "decoder": [names[int(k)] for k in decoder],
              "balanced_decoder": [names[int(k)] for k in balanced], "heldout": None}
    if s.eval_split:
        ectl, elat, etrue, estats = pairs(s.eval_split)
        if ectl.kind != ctl.kind or (ectl.names and ectl.names != ctl.names):
            raise UserError(f"splits {s.split!r} and {s.eval_split!r} of {where} have different "
                            f"controls ({ctl.kind} vs {ectl.kind})")
        # ACTION_<id> beyond those seen in the fit split: counted, and always predicted wrong
        report["heldout"] = {"split": s.eval_split, **estats,
                             "unseen_in_fit": int((etrue >= K).sum()),
                             **accuracy_report(decoder, balanced, majority, elat, etrue, K)}
    seen = per_control >= 0
    report["unseen_controls"] = [n for n, ok in zip(names, seen) if not ok]
    kept = tuple(n for n, ok in zip(names, seen) if ok)
    info = {k: report[k] for k in ("kind", "data", "prior", "lam_window", "decoder",
                                    "balanced_decoder", "unseen_controls")}
    info["fit"], info["heldout"] = report["fit"], report["heldout"]
    acc = report["heldout"]["accuracy"] if report["heldout"] else None
    amap = ActionMap(names=kept, latent=tuple(int(a) for a in per_control[seen]),
                     keys=default_keys(kept), source="fit", num_actions=A, accuracy=acc,
                     info=info)
    report["path"] = amap.save(workdir)
    report["seconds"] = time.perf_counter() - t0
    return amap, report
