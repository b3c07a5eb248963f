"""Named controls for a dynamics run: which latent action each of the game's own actions means.

A run's LAM learns `num_actions` unnamed latent actions. Where the training data had true actions,
`genie-jax actions fit` (genie_jax/actions_fit.py) learns which latent id each true control
(CoinRun's 6 behavioural classes, Atari's ALE action names) maps to and saves the map as
WORKDIR/action_map.json. Without that file a run keeps numbered latent actions "0".."A-1".

`play`, `sample --actions=RIGHT,RIGHT,UP` and the notebook read the map with `load_action_map`.
Keys are browser `KeyboardEvent.key` values ("ArrowLeft", " ", "a", "1", ...).

WORKDIR/action_map.json:
  {"version": 1, "source": "fit" | "latent", "num_actions": A,
   "controls": [{"name": "LEFT", "latent": 3}, ...],      # display order
   "keys": {"ArrowLeft": "LEFT", ...},                      # key -> control name
   "accuracy": 0.41 | null,                                 # held-out, for a fitted map
   "info": {...}}                                           # how it was fitted (free-form)
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

from genie_jax.errors import UserError

FILENAME = "action_map.json"
VERSION = 1
SOURCES = ("fit", "latent")

# Natural keys for the action names games use (CoinRun classes, ALE names); anything else gets
# only a digit key. Several names may want the same key: the first control in display order wins.
_NAME_KEYS = {
    "LEFT": ("ArrowLeft", "a"), "RIGHT": ("ArrowRight", "d"), "UP": ("ArrowUp", "w"),
    "DOWN": ("ArrowDown", "s"), "FIRE": (" ",), "NOOP": ("n",),
    "LEFT+UP": ("q",), "RIGHT+UP": ("e",), "UPLEFT": ("q",), "UPRIGHT": ("e",),
    "DOWNLEFT": ("z",), "DOWNRIGHT": ("c",),
}
# A run without a fitted map: arrows / WASD / space on the first latent ids.
_LATENT_KEYS = (("ArrowLeft", "a"), ("ArrowRight", "d"), ("ArrowUp", "w"), ("ArrowDown", "s"),
                (" ",))
_INT = re.compile(r"^[0-9]+$")
_SIGNED_INT = re.compile(r"^[-+]?[0-9]+$")


def default_keys(names, latent_ids: bool = False) -> dict[str, str]:
    """KeyboardEvent.key -> control name: natural keys for known names (or, for numbered latent
    actions, arrows/WASD/space on the first ids), and digit keys 1..9, 0 for the first ten
    controls (numbered latent actions: digit d -> latent d)."""
    keys: dict[str, str] = {}
    for i, name in enumerate(names):
        wanted = (_LATENT_KEYS[i] if i < len(_LATENT_KEYS) else ()) if latent_ids \
            else _NAME_KEYS.get(name.upper(), ())
        for k in wanted:
            keys.setdefault(k, name)
    upper = {n.upper(): n for n in names}
    # Games without FIRE/DOWN (CoinRun): space jumps, down stands still, so arrows, WASD and
    # space all do something.
    for key, name in ((" ", "UP"), ("ArrowDown", "NOOP"), ("s", "NOOP")):
        if not latent_ids and name in upper:
            keys.setdefault(key, upper[name])
    for i, name in enumerate(names[:10]):
        digit = name if latent_ids else str((i + 1) % 10)
        keys.setdefault(digit, name)
    return keys


@dataclasses.dataclass(frozen=True)
class ActionMap:
    names: tuple[str, ...]          # one per control, display order
    latent: tuple[int, ...]         # latent action id of each control
    keys: dict[str, str]            # KeyboardEvent.key -> control name
    source: str                     # 'fit' or 'latent'
    num_actions: int                # the run's latent actions (model.num_actions)
    accuracy: float | None = None   # held-out accuracy of the fit (true class from latent id)
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _check(self.to_dict(), "ActionMap")

    @classmethod
    def numbered(cls, num_actions: int) -> "ActionMap":
        """Numbered latent actions "0".."A-1" with default keys."""
        names = tuple(str(i) for i in range(num_actions))
        return cls(names=names, latent=tuple(range(num_actions)),
                   keys=default_keys(names, latent_ids=True), source="latent",
                   num_actions=num_actions)

    def parse(self, text: str) -> list[int]:
        """'RIGHT,RIGHT,UP' (names, any case) or raw latent ids '0,3' (or a mix) -> latent ids."""
        parts = [p.strip() for p in str(text).split(",")]
        if not any(parts):
            raise UserError("no actions given; use comma-separated names "
                            f"({', '.join(self.names)}) or latent ids 0..{self.num_actions - 1}")
        by_name = {n.upper(): a for n, a in zip(self.names, self.latent)}
        ids, unknown, outside = [], [], []
        for p in parts:
            if not p:
                raise UserError(f"empty action in {text!r}")
            if p.upper() in by_name:
                ids.append(by_name[p.upper()])
            elif _SIGNED_INT.match(p):
                ids.append(int(p))
                if not 0 <= ids[-1] < self.num_actions:
                    outside.append(ids[-1])
            else:
                unknown.append(p)
        if unknown and self.source == "latent":
            raise UserError(f"unknown action{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}: this run has numbered latent "
                            f"actions, given as comma-separated integers 0..{self.num_actions - 1} "
                            "(`genie-jax actions fit` names them after the game's controls)")
        if unknown:
            raise UserError(f"unknown action{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}; known: {', '.join(self.names)} "
                            f"(or latent ids 0..{self.num_actions - 1})")
        if outside:
            raise UserError(f"latent action ids {sorted(set(outside))} outside "
                            f"[0, {self.num_actions}): this run has {self.num_actions} latent "
                            "actions (model.num_actions)")
        return ids

    def name_of(self, latent_id: int) -> str:
        """The control(s) mapped to a latent id ('LEFT', or 'LEFT/LEFT+UP' when several share
        it); the id itself as text when no control maps to it."""
        names = [n for n, a in zip(self.names, self.latent) if a == int(latent_id)]
        return "/".join(names) if names else str(int(latent_id))

    def to_dict(self) -> dict:
        return {"version": VERSION, "source": self.source, "num_actions": self.num_actions,
                "controls": [{"name": n, "latent": a} for n, a in zip(self.names, self.latent)],
                "keys": dict(self.keys), "accuracy": self.accuracy, "info": dict(self.info)}

    def save(self, workdir: str) -> str:
        """Write WORKDIR/action_map.json atomically; -> its path."""
        from genie_jax.media import write_text
        return write_text(os.path.join(workdir, FILENAME),
                          json.dumps(self.to_dict(), indent=1) + "\n")


def _check(d, where: str, num_actions: int | None = None) -> None:
    """One-line UserError naming `where` and the bad key."""
    def bad(key, msg):
        raise UserError(f"{where}: {key}: {msg}")
    if not isinstance(d, dict):
        bad("(top level)", "must be a JSON object")
    for key in ("version", "source", "num_actions", "controls", "keys"):
        if key not in d:
            bad(key, "missing")
    if d["version"] != VERSION:
        bad("version", f"unsupported {d['version']!r} (expected {VERSION})")
    if d["source"] not in SOURCES:
        bad("source", f"must be one of {', '.join(SOURCES)}; got {d['source']!r}")
    A = d["num_actions"]
    if not isinstance(A, int) or isinstance(A, bool) or A < 1:
        bad("num_actions", f"must be a positive integer; got {A!r}")
    if num_actions is not None and A != num_actions:
        bad("num_actions", f"the map is for {A} latent actions but the run has {num_actions} "
            "(refit it: genie-jax actions fit)")
    controls = d["controls"]
    if not isinstance(controls, list) or not controls:
        bad("controls", "must be a non-empty list")
    seen = set()
    for i, c in enumerate(controls):
        if not isinstance(c, dict) or set(c) != {"name", "latent"}:
            bad(f"controls[{i}]", 'must be {"name": str, "latent": int}')
        n, a = c["name"], c["latent"]
        if not isinstance(n, str) or not n.strip() or "," in n or n != n.strip():
            bad(f"controls[{i}].name", f"must be a non-empty name without commas; got {n!r}")
        if n.upper() in seen:
            bad(f"controls[{i}].name", f"{n!r} appears twice")
        seen.add(n.upper())
        if not isinstance(a, int) or isinstance(a, bool) or not 0 <= a < A:
            bad(f"controls[{i}].latent", f"must be an integer in [0, {A}); got {a!r}")
        if _INT.match(n) and int(n) != a:  # '3' must mean latent 3, or parse would be ambiguous
            bad(f"controls[{i}].name", f"a numeric name must equal its latent id; got {n!r} "
                f"-> {a}")
    keys = d["keys"]
    if not isinstance(keys, dict):
        bad("keys", "must be an object {KeyboardEvent.key: control name}")
    names = {c["name"] for c in controls}
    for k, n in keys.items():
        if not k:
            bad("keys", "a key must be a non-empty KeyboardEvent.key")
        if n not in names:
            bad(f"keys[{k!r}]", f"unknown control {n!r}; known: {', '.join(sorted(names))}")
    acc = d.get("accuracy")
    if acc is not None and (not isinstance(acc, (int, float)) or isinstance(acc, bool)
                            or not 0.0 <= acc <= 1.0):
        bad("accuracy", f"must be null or a number in [0, 1]; got {acc!r}")
    if not isinstance(d.get("info", {}), dict):
        bad("info", "must be an object")


def from_dict(d: dict, where: str = "action map", num_actions: int | None = None) -> ActionMap:
    _check(d, where, num_actions)
    return ActionMap(names=tuple(c["name"] for c in d["controls"]),
                     latent=tuple(c["latent"] for c in d["controls"]), keys=dict(d["keys"]),
                     source=d["source"], num_actions=d["num_actions"],
                     accuracy=None if d.get("accuracy") is None else float(d["accuracy"]),
                     info=dict(d.get("info", {})))


def load_action_map(workdir: str, num_actions: int) -> ActionMap:
    """WORKDIR/action_map.json if present (validated; a bad file is a UserError naming the file
    and key), else numbered latent actions "0".."A-1" with default keys."""
    path = os.path.join(workdir, FILENAME)
    if not os.path.exists(path):
        return ActionMap.numbered(int(num_actions))
    try:
        with open(path) as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    return from_dict(d, path, int(num_actions))
