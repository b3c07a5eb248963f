"""Will a config fit, and how fast will it run? Ahead-of-time answers, with no accelerator.

`plan(config, devices, chip)` builds the training engine over `devices` (the devices of a TPU
topology description from libtpu, or simulated CPU devices), lowers and compiles the real train
step with abstract arguments (nothing is allocated or read from disk) and reads the compiler's
own figures:
  * memory per chip (`Compiled.memory_analysis`): arguments (train state, batch, frozen params),
    outputs (the new state, which aliases the donated old one), temporaries, and their total
    against the chip's HBM;
  * FLOPs per chip and an estimated step time (`Compiled.cost_analysis`: 'flops' and XLA's
    'optimal_seconds' for the partitioned program of one chip; where that is not positive,
    the roofline bound of the chip's FLOPs and bytes accessed);
  * model FLOPs: the step lowered once more on one CPU device with rematerialisation off
    (model.remat='none'), so recomputation is not counted (XLA's cost analysis of the
    unpartitioned program);
  * from these, MFU = model FLOPs / (chips x peak FLOP/s x step time), and days for N steps.
When the total does not fit, `suggest` compiles variants (a remat policy that saves more
memory: save_dots, then full; microbatches, more FSDP, more tensor parallelism) until one fits.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import re
import time
from typing import Any

from genie_jax.errors import UserError

GIB = 2 ** 30
# The remat policies from the most activation memory kept to the least (tests/test_remat.py
# measures this order on a compiled train step).
REMAT_BY_MEMORY = ("none", "save_dots", "full")


def remat_policy(value) -> str:
    """config.model.remat as a policy name (a bool: true = full); imported late, as jax is."""
    from genie_jax.models.st_transformer import remat_policy as policy_of
    try:
        return policy_of(value)
    except ValueError as e:
        raise UserError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    hbm_gib: float | None       # memory per chip; None: unknown (simulated CPU devices)
    peak_flops: float | None    # dense bf16 FLOP/s per chip; None: unknown
    hbm_bytes_per_s: float | None = None  # HBM bandwidth per chip


# Per-chip HBM, peak dense bf16 compute and HBM bandwidth, from Google Cloud's TPU pages.
CHIPS = {
    "v4": Chip("TPU v4", 32, 275e12, 1200e9),
    "v5e": Chip("TPU v5e", 16, 197e12, 819e9),
    "v5p": Chip("TPU v5p", 95, 459e12, 2765e9),
    "v6e": Chip("TPU v6e", 32, 918e12, 1640e9),
}
CPU = Chip("simulated CPU device", None, None)
INSTALL_HINT = "pip install -e '.[tpu]' (jax[tpu]: libtpu; keep it out of a CPU/GPU env)"


def chip_of(topology: str) -> Chip:
    gen = topology.split(":", 1)[0].lower()
    if gen not in CHIPS:
        raise UserError(f"--topology={topology!r}: unknown TPU generation {gen!r} "
                        f"(known: {', '.join(CHIPS)}; e.g. v5p:8x8x4)")
    return CHIPS[gen]


def tpu_devices(topology: str) -> list:
    """The devices of a TPU topology (e.g. 'v5p:8x8x4'), described by libtpu: they can be
    compiled for, not run on."""
    if not re.fullmatch(r"[a-z0-9]+:\d+(x\d+)+", topology.lower()):
        raise UserError(f"--topology={topology!r} is not GENERATION:AxBxC (e.g. v5p:8x8x4)")
    chip_of(topology)
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server: not on a TPU VM
    # Describing a topology uses no TPU, so several plans (or a plan beside a TPU job) may load
    # libtpu at once; without this the second one fails on libtpu's lockfile.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        import libtpu  # noqa: F401  (only: is it installed)
    except ImportError:
        raise UserError(f"--topology needs libtpu: {INSTALL_HINT}") from None
    from jax.experimental import topologies
    try:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
    except Exception as e:  # noqa: BLE001 - libtpu rejects a shape it does not know
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(f"libtpu cannot describe --topology={topology!r}: {msg}") from None


def cpu_devices(n: int) -> list:
    import jax
    devices = jax.devices("cpu")
    if n < 1 or len(devices) < n:
        raise UserError(f"--devices={n}: this process has {len(devices)} CPU devices (set "
                        f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before JAX starts)")
    return devices[:n]


# ---------------------------------------------------------------------------------------------

def _with(config, **changes):
    """A copy of `config` with dotted keys changed, e.g. {'model.remat': 'full'}. A value of
    another type replaces the field (an older config's bool remat by a policy name)."""
    c = copy.deepcopy(config)
    with c.unlocked() if hasattr(c, "unlocked") else contextlib.nullcontext():
        for key, value in changes.items():
            *path, last = key.split(".")
            node = c
            for p in path:
                node = node[p]
            try:
                node[last] = value
            except TypeError:  # ml_collections keeps a field's type
                del node[last]
                node[last] = value
    return c


def resolved_mesh(config, n_devices: int) -> tuple[int, int, int]:
    """config.mesh.shape with its -1 filled in for `n_devices`."""
    shape = list(config.mesh.shape)
    if -1 in shape:
        known = 1
        for s in shape:
            known *= s if s != -1 else 1
        shape[shape.index(-1)] = n_devices // known
    return tuple(int(s) for s in shape)


def build_engine_on(config, devices):
    """The training engine of `config` over `devices` (addressable or not)."""
    from genie_jax.train.trainer import build_engine
    try:
        return build_engine(config, devices=devices)
    except ValueError as e:  # a mesh shape that does not match the device count
        raise UserError(f"{e} (config mesh.shape {tuple(config.mesh.shape)})") from None


def _shard_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
    import jax
    import numpy as np
    return sum(int(np.prod(a.sharding.shard_shape(a.shape))) * a.dtype.itemsize
               for a in jax.tree.leaves(tree))


# The TPU compiler refuses a program whose temporaries exceed HBM, e.g. "RESOURCE_EXHAUSTED: Ran
# out of memory on HBM, the total memory required for HLO temporaries (112.90G) exceeds
# available HBM (95.74G)." (XLA prints sizes in binary units: G = GiB.)
_HBM_OOM = re.compile(r"HLO temporaries \(([\d.]+)([KMGT])\) exceeds available HBM "
                      r"\(([\d.]+)([KMGT])\)")
_UNIT = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def compile_step(config, devices) -> dict:
    """Compile the train step of `config` over `devices`; the compiler's per-chip figures.

    A step the TPU compiler refuses for lack of HBM is a plan too: its temporaries are the
    figure in the compiler's message, and the arguments and outputs are the state, batch and
    frozen params each chip holds (the outputs alias the donated state)."""
    engine = build_engine_on(config, devices)
    args = engine.abstract_state, engine.abstract_batch(), engine.frozen_abstract
    state_bytes = _shard_bytes(engine.abstract_state)
    out = {"mesh": dict(engine.mesh.shape), "devices": len(devices),
           "device_kind": getattr(devices[0], "device_kind", str(devices[0])),
           "params": engine.param_count(),
           "param_bytes_per_chip": _shard_bytes(engine.abstract_state["params"])}
    t0 = time.perf_counter()
    try:
        with engine.context():
            compiled = engine.step_fn.lower(*args).compile()
    except Exception as e:  # noqa: BLE001 - only the compiler's out-of-HBM verdict is kept
        oom = _HBM_OOM.search(str(e))
        if not oom:
            raise
        temp = float(oom.group(1)) * _UNIT[oom.group(2)]
        m = {"argument": _shard_bytes(args), "output": state_bytes, "alias": state_bytes,
             "temp": int(temp), "generated_code": 0}
        out.update(memory_per_chip_bytes={**m, "total": m["argument"] + m["temp"],
                                          "compiler_peak": 0},
                   compiler_hbm_bytes=int(float(oom.group(3)) * _UNIT[oom.group(4)]),
                   compiler_error=oom.group(0), flops_per_chip=None,
                   bytes_accessed_per_chip=None, xla_optimal_seconds=None,
                   compile_s=time.perf_counter() - t0)
        return out
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    m = {k: int(getattr(mem, f"{k}_size_in_bytes", 0) or 0)
         for k in ("argument", "output", "alias", "temp", "generated_code")}
    total = m["argument"] + m["output"] - m["alias"] + m["temp"]
    out.update(
        memory_per_chip_bytes={**m, "total": total,
                               "compiler_peak": int(getattr(mem, "peak_memory_in_bytes", 0)
                                                    or 0)},
        flops_per_chip=float(cost.get("flops", 0.0)),
        bytes_accessed_per_chip=float(cost.get("bytes accessed", 0.0)),
        xla_optimal_seconds=float(cost["optimal_seconds"]) if "optimal_seconds" in cost
        else None,
        compile_s=compile_s)
    return out


def model_flops(config) -> float:
    """FLOPs of one train step without rematerialisation (recompute is not model work): the
    step lowered for one CPU device, counted by XLA's cost analysis of that global program."""
    import jax
    changes = {"model.remat": "none", "mesh.shape": (1, 1, 1)}
    if "microbatches" in config.train:  # the same work; a loop body may be counted once
        changes["train.microbatches"] = 1
    for key in _scanned(config):  # the same weights unrolled: every block counted
        changes[key] = False
    c = _with(config, **changes)
    engine = build_engine_on(c, jax.devices("cpu")[:1])
    with engine.context():
        cost = engine.step_fn.lower(engine.abstract_state, engine.abstract_batch(),
                                    engine.frozen_abstract).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    return float(cost.get("flops", 0.0))


def plan(config, devices, chip: Chip, steps: int | None = None, *,
         count_model_flops: bool = True) -> dict:
    """The plan of one config on `devices`: memory, fit, FLOPs, step time, MFU, days."""
    steps = int(steps or config.train.steps)
    out = {"stage": config.stage, "batch": int(config.data.batch_size),
           "frames": int(config.data.num_frames),
           "resolution": int(config.data.resolution), "remat": remat_policy(config.model.remat),
           "dtype": str(config.model.dtype), "steps": steps}
    out.update(compile_step(config, devices))
    k = int(config.train.get("microbatches", 1))
    out["microbatches"] = k
    if k > 1 and out["flops_per_chip"] is not None:
        # XLA's cost analysis counts a loop body once (checked on CPU and TPU with a scan of
        # matmuls): scale the accumulation loop's figures by its trip count (the optimizer
        # update outside the loop is over-counted by as much; it is small beside the model).
        for key in ("flops_per_chip", "bytes_accessed_per_chip", "xla_optimal_seconds"):
            if out[key] is not None:
                out[key] *= k
    out["model_flops_per_step"] = model_flops(config) if count_model_flops else None
    if _scanned(config):
        out["note"] = ("model.scan_layers: XLA's cost analysis counts the scanned blocks once, "
                       "so the compiled FLOPs and XLA's step time leave out depth-1 blocks (and "
                       "MFU is overstated); the model FLOPs are counted unrolled")
    return derive(out, chip, steps)


def _scanned(config) -> list[str]:
    """The scan_layers keys of `config` (its model's, a dynamics config's tokenizer's and LAM's)
    that are on."""
    out = []
    for section in ("model", "tokenizer.model", "lam.model"):
        node = config
        for part in section.split("."):
            node = node.get(part) if hasattr(node, "get") else None
        if node is not None and node.get("scan_layers", False):
            out.append(f"{section}.scan_layers")
    return out


def derive(out: dict, chip: Chip, steps: int) -> dict:
    """Fit, step time, MFU and days from a plan's compiled figures (`compile_step`).

    Step time: XLA's own estimate ('optimal_seconds' of the compiled program) when it gives a
    positive one; it can give a negative one (seen for the 11b-size tokenizer), and then the
    roofline bound max(FLOPs / peak, bytes accessed / HBM bandwidth) of one chip is used."""
    out.update(chip=chip.name, hbm_gib=chip.hbm_gib, peak_flops_per_chip=chip.peak_flops,
               hbm_bytes_per_s=chip.hbm_bytes_per_s)
    total = out["memory_per_chip_bytes"]["total"]
    out["fits"] = None if chip.hbm_gib is None else total <= chip.hbm_gib * GIB
    if out.get("compiler_error"):
        out["fits"] = False  # the compiler itself refused it
    n = out["devices"]
    flops = out["flops_per_chip"]
    out["compiler_flops_per_step"] = flops * n if flops is not None else None
    roof = None
    if chip.peak_flops and chip.hbm_bytes_per_s and flops is not None:
        roof = max(out["flops_per_chip"] / chip.peak_flops,
                   out["bytes_accessed_per_chip"] / chip.hbm_bytes_per_s)
    out["roofline_step_s"] = roof
    xla = out.get("xla_optimal_seconds")
    if xla is not None and xla > 0:
        out["estimated_step_s"], out["step_time_source"] = xla, "XLA cost model"
    elif roof:
        out["estimated_step_s"] = roof
        out["step_time_source"] = "roofline bound; XLA gave no positive estimate"
    else:
        out["estimated_step_s"], out["step_time_source"] = None, None
    t = out["estimated_step_s"]
    if t and chip.peak_flops:
        flops = out.get("model_flops_per_step") or out["compiler_flops_per_step"]
        out["mfu"] = flops / (n * chip.peak_flops * t)
        out["hardware_flops_utilization"] = out["flops_per_chip"] / (chip.peak_flops * t)
    else:
        out["mfu"] = out["hardware_flops_utilization"] = None
    out["steps"] = steps
    out["days"] = t * steps / 86400 if t else None
    return out


def fit_line(p: dict) -> str:
    """One line: does it fit, with the figure."""
    gib = p["memory_per_chip_bytes"]["total"] / GIB
    if p["fits"] is None:
        return (f"memory: {_size(p['memory_per_chip_bytes']['total'])} per device (HBM unknown "
                f"for {p['chip']})")
    verdict = "fits" if p["fits"] else "DOES NOT FIT"
    line = (f"{verdict}: {gib:.2f} GiB per chip of {p['hbm_gib']:g} GiB HBM ({p['chip']}, "
            f"mesh data={p['mesh']['data']} fsdp={p['mesh']['fsdp']} "
            f"tensor={p['mesh']['tensor']})")
    if p.get("compiler_error"):
        line += f"; the compiler: {p['compiler_error']}"
    return line


def suggest(config, devices, chip: Chip, failed: dict | None = None, *,
            max_compiles: int = 4) -> list[dict]:
    return list(iter_suggestions(config, devices, chip, failed, max_compiles=max_compiles))


def iter_suggestions(config, devices, chip: Chip, failed: dict | None = None, *,
                     max_compiles: int = 4):
    """Variants of a config that does not fit, each compiled (at most `max_compiles`), in order,
    stopping at the first that fits. `failed` is the plan that did not fit (its memory split
    decides the order).
      * a remat policy that keeps less: save_dots (projection and MLP matmul outputs kept,
        the rest recomputed) then full (only each block's input kept), from 'none'; full from
        'save_dots'. The variants below are built on full;
      * when the state (params, optimizer) outweighs the temporaries: all data parallelism
        folded into FSDP, then tensor parallelism doubled (while the heads divide);
      * 2, 4, 8, 16 microbatches (`train.microbatches`: gradient accumulation in a scan, the
        real step compiled). Activations per chip follow the clips per chip, which more tensor
        parallelism does not reduce (each chip then holds the clips of fewer, larger batch
        shards), so when temporaries dominate microbatches come before the mesh changes.
        (`plan` scales XLA's per-loop figures by k.)"""
    n = len(devices)
    data, fsdp, tensor = resolved_mesh(config, n)
    policy = remat_policy(config.model.remat)
    remat = [(f"model.remat={p}", {"model.remat": p})
             for p in REMAT_BY_MEMORY[REMAT_BY_MEMORY.index(policy) + 1:]]
    base = {"model.remat": "full"} if policy != "full" else {}
    mesh: list[tuple[str, dict]] = []
    if data > 1:
        fsdp, data = data * fsdp, 1
        mesh.append((f"mesh.shape=(1,{fsdp},{tensor}) (FSDP over every chip)",
                     {"mesh.shape": (1, fsdp, tensor)}))
    heads = int(config.model.num_heads)
    if fsdp % 2 == 0 and heads % (tensor * 2) == 0:
        mesh.append((f"mesh.shape=(1,{fsdp // 2},{tensor * 2}) (tensor parallelism x2)",
                     {"mesh.shape": (1, fsdp // 2, tensor * 2)}))
    B = int(config.data.batch_size)
    ways = resolved_mesh(config, n)[0] * resolved_mesh(config, n)[1]
    k0 = int(config.train.get("microbatches", 1))
    micro = [(f"train.microbatches={k} (gradient accumulation, {B // k} clips at a time)",
              {"train.microbatches": k})
             for k in (2, 4, 8, 16) if k > k0 and B % (k * ways) == 0]
    mem = (failed or {}).get("memory_per_chip_bytes", {})
    state_heavy = mem.get("argument", 0) > mem.get("temp", 0)
    candidates = remat + [(label, {**base, **c}) for label, c in
                          (mesh + micro if state_heavy else micro + mesh)]
    for label, change in candidates[:max_compiles]:
        p = plan(_with(config, **change), devices, chip, count_model_flops=False)
        total = p["memory_per_chip_bytes"]["total"]
        fits = chip.hbm_gib is not None and total <= chip.hbm_gib * GIB \
            and not p.get("compiler_error")
        t = p["estimated_step_s"]
        yield {"change": label, "total_gib": total / GIB, "fits": fits, "estimated_step_s": t}
        if fits:
            return


def _size(n: float) -> str:
    """Bytes, readable: GiB from 1 GiB up, else MiB."""
    return f"{n / GIB:.2f} GiB" if abs(n) >= GIB else f"{n / 2 ** 20:.2f} MiB"


def _count(n: float) -> str:
    return f"{n / 1e9:.3f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,.0f}"


def report_text(p: dict) -> str:
    """The plan as a few lines for the console."""
    m = p["memory_per_chip_bytes"]
    lines = [
        f"{p['stage']}: {_count(p['params'])} trainable params, batch {p['batch']} x "
        f"{p['frames']} frames at {p['resolution']}px, {p['dtype']} compute, "
        f"remat {p['remat']}; {p['devices']} x {p['device_kind']}, "
        f"mesh {p['mesh']}; compiled in {p['compile_s']:.1f} s",
        f"memory per chip: arguments {_size(m['argument'])}, outputs {_size(m['output'])} "
        f"(aliasing {_size(m['alias'])} of the arguments), temporaries {_size(m['temp'])}; "
        f"total {_size(m['total'])}" + (
            f" (program {_size(m['generated_code'])}; the compiler's peak "
            f"{_size(m['compiler_peak'])})" if m["compiler_peak"] else ""),
        fit_line(p),
    ]
    mf = p.get("model_flops_per_step")
    if p["compiler_flops_per_step"] is not None:
        lines.append(f"FLOPs per step: {p['compiler_flops_per_step']:.3e} compiled (all chips)"
                     + (f", {mf:.3e} model (no recompute)" if mf else ""))
    if p["estimated_step_s"]:
        s = f"estimated step time {p['estimated_step_s']:.3f} s ({p['step_time_source']})"
        if p["mfu"] is not None:
            s += (f"; MFU {100 * p['mfu']:.1f}% (hardware FLOPs utilisation "
                  f"{100 * p['hardware_flops_utilization']:.1f}%)")
        s += f"; {p['steps']:,} steps: {p['days']:.2f} days"
        lines.append(s)
    if p.get("note"):
        lines.append(f"note: {p['note']}")
    lines += [suggestion_line(s) for s in p.get("suggestions", [])]
    return "\n".join(lines)


def suggestion_line(sug: dict) -> str:
    return (f"  try {sug['change']}: {sug['total_gib']:.2f} GiB per chip -> "
            f"{'fits' if sug['fits'] else 'still too big'}"
            + (f", step {sug['estimated_step_s']:.3f} s" if sug["estimated_step_s"] else ""))


def jsonable(p: dict) -> dict[str, Any]:
    return {k: (v if not isinstance(v, tuple) else list(v)) for k, v in p.items()}


def count_params(config) -> int:
    """Trainable parameters of `config`'s stage, from abstract shapes only (jax.eval_shape):
    nothing is allocated, so a 10B-parameter config counts in seconds."""
    import jax
    import numpy as np
    from genie_jax.runs import strip_boxes
    from genie_jax.stages import get_stage
    if "scan_layers" in config.model and not config.model.scan_layers:
        # The same parameters, stacked: tracing one block per stack instead of every block
        # makes a 48-layer count several times faster.
        config = config.copy_and_resolve_references()
        config.model.scan_layers = True
    stage = get_stage(config)
    batch = stage.batch_spec(1)
    variables = jax.eval_shape(stage.init, jax.ShapeDtypeStruct((2,), np.uint32), batch)
    return int(sum(np.prod(a.shape) for a in jax.tree.leaves(strip_boxes(variables["params"]))))
