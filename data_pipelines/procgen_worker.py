"""Record procgen episodes with true actions (runs inside the isolated procgen venv).

procgen-mirror pins numpy<2, so genie_jax runs this script with the interpreter of its own venv
(see genie_jax/data/games.py) and reads back one .npz per episode:
  frames uint8 [T, 64, 64, 3], actions int32 [T] (action taken after frame t), seed, terminated.
With --frameskip=k a recorded frame is followed by k game steps of its action (default 1).
With --probe the .npz also holds outcomes int16 [T, A]: before each recorded step the game's
state is saved and every action a is tried from it (the same k steps); outcomes[t, a] is the
smallest action whose next frame equals a's, so actions with equal ids look the same on the next
frame. The state is restored before the real step, so the episode is the one recorded without it.

Episode boundaries: procgen resets by itself, so the observation after a terminating action is
the first frame of the *next* episode. We stop there and do not record it: a terminated episode
has T frames and T actions, and its last action leads to no recorded frame. An episode cut by
--length also records T frames and T actions (the last action is the one the policy chose next).

Each episode is its own level: start_level=seed, num_levels=1, rand_seed=seed, and the sticky
random policy is seeded with the same seed, so every episode is reproducible from its seed.
Only numpy and procgen are imported here.
"""
import argparse
import json
import os
import sys

import numpy as np


def record(env_name: str, seed: int, length: int, sticky: float, distribution_mode: str,
           frameskip: int = 1, action_set=None, probe: bool = False):
    from procgen import ProcgenGym3Env
    env = ProcgenGym3Env(num=1, env_name=env_name, start_level=seed, num_levels=1,
                         rand_seed=seed, distribution_mode=distribution_mode)
    n_actions = env.ac_space.eval_shape[0] if hasattr(env.ac_space, "eval_shape") else None
    n_actions = n_actions or len(env.get_combos())
    rng = np.random.default_rng(seed)
    choices = list(action_set) if action_set else list(range(n_actions))
    frames, actions, outcomes = [], [], []
    a = choices[int(rng.integers(len(choices)))]
    terminated = False
    for t in range(length):
        _, obs, first = env.observe()
        if t > 0 and first[0]:
            terminated = True  # this frame belongs to the next episode
            break
        frames.append(obs["rgb"][0].copy())
        if rng.random() >= sticky:
            a = choices[int(rng.integers(len(choices)))]
        actions.append(a)
        if probe:
            outcomes.append(_probe(env, n_actions, frameskip))
        _step(env, a, frameskip)
    env.close() if hasattr(env, "close") else None
    out = (np.stack(frames).astype(np.uint8), np.array(actions, np.int32), terminated, n_actions)
    return out + ((np.array(outcomes, np.int16).reshape(len(frames), n_actions),) if probe else ())


def _step(env, a: int, frameskip: int) -> None:
    for k in range(frameskip):  # the action held for `frameskip` game steps
        if k > 0 and env.observe()[2][0]:
            break  # the episode ended inside the skip: the next observe() stops the loop
        env.act(np.array([a]))


def _probe(env, n_actions: int, frameskip: int) -> list[int]:
    """Try every action from the current state; -> per action the smallest action with the same
    next frame. The state is put back afterwards."""
    state = env.callmethod("get_state")
    nxt = []
    for a in range(n_actions):
        env.callmethod("set_state", state)
        _step(env, a, frameskip)
        nxt.append(env.observe()[1]["rgb"][0].copy())
    env.callmethod("set_state", state)
    return [next(b for b in range(a + 1) if np.array_equal(nxt[b], nxt[a]))
            for a in range(n_actions)]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="coinrun")
    p.add_argument("--seeds", required=True, help="comma-separated episode seeds")
    p.add_argument("--length", type=int, default=1000)
    p.add_argument("--sticky", type=float, default=0.5)
    p.add_argument("--distribution-mode", default="hard")
    p.add_argument("--frameskip", type=int, default=1,
                   help="game steps per recorded frame, the action held for all of them")
    p.add_argument("--actions", default="",
                   help="comma-separated action ids the policy draws from (default: all)")
    p.add_argument("--probe", action="store_true",
                   help="also record what every action would have shown next (outcomes)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        frames, actions, terminated, n_actions, *probed = record(
            args.env, seed, args.length, args.sticky, args.distribution_mode, args.frameskip,
            [int(a) for a in args.actions.split(",") if a], args.probe)
        path = os.path.join(args.out, f"{args.env}-{seed}.npz")
        tmp = path + ".tmp.npz"
        np.savez(tmp, frames=frames, actions=actions, seed=seed, terminated=terminated,
                 num_actions=n_actions, **({"outcomes": probed[0]} if probed else {}))
        os.replace(tmp, path)
        print(json.dumps(dict(seed=seed, frames=len(frames), terminated=terminated)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
