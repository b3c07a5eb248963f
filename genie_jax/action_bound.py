"""How much of a CoinRun transition's control the frames can show: the ceiling on the NMI between
latent actions and the game's control classes under the data's own (sticky random) policy.

The procgen worker's probe (`data_pipelines/procgen_worker.py --probe`) tries every action from
the state before each recorded step: outcomes[t, b] is the smallest action whose next frame
equals action b's. From it, per transition t (action a_t, frames t -> t+1):
  changes_nothing   every action would have shown the same next frame
  like_noop         a_t shows what NOOP (procgen action 4) would have shown
  consistent        the control classes of the actions whose next frame equals a_t's: what a
                    reader of the two frames who knows the game could say about the control
  identifiable      exactly one class is consistent: the frames name the control
The ceiling is NMI(class, consistent set): a LAM whose code is the consistent set scores it; a
LAM sees only frames, so on one transition it cannot do better (it could still read the sticky
policy's habits from earlier frames, which this ceiling leaves out).
Shapes: _T is the transitions of one episode (its frames minus one), _A the procgen actions (15).
"""
from __future__ import annotations

import numpy as np

from genie_jax.data.games import COINRUN_ACTION_CLASSES, COINRUN_CLASS_NAMES
from genie_jax.metrics import contingency_table, normalized_mutual_information

NOOP_ACTION = 4  # procgen's () combo


def transition_labels(outcomes_TA, actions_T) -> dict[str, np.ndarray]:
    """Per-transition labels from one episode's probe: outcomes [T, A] int and actions [T] (T
    transitions: rows of frames that have a next frame). -> dict of [T] arrays (see module)."""
    o = np.asarray(outcomes_TA, np.int64)
    a = np.asarray(actions_T, np.int64)
    if o.ndim != 2 or o.shape[0] != a.shape[0]:
        raise ValueError(f"outcomes [T, A] and actions [T] disagree: {o.shape} vs {a.shape}")
    if o.shape[1] != len(COINRUN_ACTION_CLASSES):
        raise ValueError(f"expected {len(COINRUN_ACTION_CLASSES)} procgen actions per row, "
                         f"got {o.shape[1]}")
    taken = o[np.arange(len(a)), a]                       # a_t's outcome group
    same_BA = o == taken[:, None]                         # actions showing what a_t shows
    class_bits = 1 << COINRUN_ACTION_CLASSES.astype(np.int64)
    consistent = np.bitwise_or.reduce(np.where(same_BA, class_bits[None], 0), axis=1)
    n_classes = np.array([bin(int(c)).count("1") for c in consistent])
    return {"class": COINRUN_ACTION_CLASSES[a].astype(np.int64),
            "changes_nothing": np.all(o == o[:, :1], axis=1),
            "like_noop": taken == o[:, NOOP_ACTION],
            "consistent": consistent,
            "identifiable": n_classes == 1}


def concat_labels(per_episode: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([d[k] for d in per_episode]) for k in per_episode[0]}


def _nmi(x, y) -> float | None:
    table, _, _ = contingency_table(x, y)
    return normalized_mutual_information(table) if table.sum() else None


def bound_report(labels: dict[str, np.ndarray], codes=None) -> dict:
    """Shares and NMIs over all transitions; with `codes` ([N] latent ids, -1 unknown) also the
    LAM's NMI with the class on all, on `acted` (a_t did not look like NOOP) and on `identifiable`
    transitions, and the share of each code's transitions that looked like NOOP."""
    cls, like_noop, ident = labels["class"], labels["like_noop"], labels["identifiable"]
    n = int(len(cls))
    out = {
        "transitions": n,
        "share_changes_nothing": float(np.mean(labels["changes_nothing"])) if n else None,
        "share_like_noop": float(np.mean(like_noop)) if n else None,
        "share_identifiable": float(np.mean(ident)) if n else None,
        "class_counts": {name: int(np.sum(cls == i)) for i, name in enumerate(COINRUN_CLASS_NAMES)},
        "share_like_noop_per_class": {
            name: (float(np.mean(like_noop[cls == i])) if np.any(cls == i) else None)
            for i, name in enumerate(COINRUN_CLASS_NAMES)},
        "ceiling_class_nmi": _nmi(labels["consistent"], cls),
    }
    if codes is not None:
        codes = np.asarray(codes, np.int64).reshape(-1)
        if codes.shape != cls.shape:
            raise ValueError(f"{codes.shape[0]} codes for {n} transitions")
        acted = ~like_noop
        out["lam"] = {
            "class_nmi": _nmi(codes, cls),
            "class_nmi_acted": _nmi(codes[acted], cls[acted]),
            "class_nmi_identifiable": _nmi(codes[ident], cls[ident]),
            "transitions_acted": int(acted.sum()),
            "transitions_identifiable": int(ident.sum()),
            "share_like_noop_per_code": {
                int(c): float(np.mean(like_noop[codes == c])) for c in np.unique(codes) if c >= 0},
        }
    return out
