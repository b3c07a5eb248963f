"""Restore the latest checkpoint of a workdir onto a given mesh and dump params (the mesh takes
the first d*f*t devices of the process). As a script:

  python tests/train/probe.py WORKDIR OUT.npz MESH(d,f,t) [config overrides as key=value ...]
"""
import sys

import jax
import numpy as np
from flax import traverse_util

sys.path.insert(0, ".")


def main(workdir, out, mesh, *overrides):
    from experiments.configs.tokenizer import get_config
    from genie_jax.runs import Checkpointer
    from genie_jax.train.trainer import build_engine
    cfg = get_config("size=test")
    cfg.mesh.shape = tuple(int(x) for x in mesh.split(","))
    for o in overrides:
        k, v = o.split("=")
        sec, key = k.split(".")
        cfg[sec][key] = type(cfg[sec][key])(v)
    n = int(np.prod(cfg.mesh.shape))
    engine = build_engine(cfg, devices=jax.devices()[:n])
    ck = Checkpointer(workdir, keep=3)
    with engine.context():
        state, step, _ = ck.restore_latest(engine.abstract_state, None, engine.meta())
    flat = traverse_util.flatten_dict(jax.device_get(state["params"]), sep="/")
    shardings = {k: str(v.sharding.spec) for k, v in
                 traverse_util.flatten_dict(state["params"], sep="/").items()}
    np.savez(out, __step=step, __ndev=n, **flat)
    print("restored", step, "on", n, "devices;", shardings["encoder/block0/mlp/fc1/kernel"])


if __name__ == "__main__":
    main(*sys.argv[1:])
