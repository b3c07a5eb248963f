"""Held-out evaluation of a dynamics run (with the tokenizer and LAM it uses): `genie-jax eval`.

`clips_per_episode` non-overlapping clips of `prompt_frames + rollout_frames` frames are taken
from each of the first `episodes` episodes of a held-out split (never 'train'; starts inside the
episode are drawn from `seed`).
On these clips:

  tokenizer     reconstruction PSNR/SSIM (windows of data.num_frames frames, as trained) and
                codebook usage (fraction of codes chosen, perplexity)
  lam           latent actions of every transition (windows of data.num_frames frames, as the
                dynamics saw them in training) and their codebook usage
  rollout       prompt = the first K real frames (and the LAM actions between them); then one
                WorldModel.step per frame with the LAM actions of the real clip; generated frame
                s (1-based) is compared with real frame K-1+s: PSNR/SSIM per step
  random        the same rollout (same prompt, same sampling seed) with uniformly random latent
                actions
  controllability  delta-PSNR per step = mean over clips of PSNR(inferred) - PSNR(random);
                reported at t = `delta_t` generated frames (4, as Genie)
  shuffled      (latent-action runs) the same rollout with the batch's own inferred actions
                shuffled over clips and steps: the codes as often as the LAM gives them, at the
                wrong times. Uniform random actions also feed codes the LAM rarely gives; a world
                that only breaks down on those scores a delta-PSNR against uniform actions but
                not against shuffled ones (controllability.delta_psnr_shuffled)
  true_actions  the same rollout driven by the clip's TRUE actions: for a latent-action run,
                through the run's fitted action map (WORKDIR/action_map.json, `genie-jax
                actions fit`: game control -> latent id), on the clips whose rollout actions
                all have a mapped control; for a run trained on true actions
                (lam.mode=true_actions), the recorded actions themselves (then this is also the
                main rollout). Its delta-PSNR against random actions is the control a player
                feels; for a latent-action run also against the shuffled inferred ones
                (true_actions.delta_psnr_shuffled: uniform draws of codes the LAM rarely
                gives flatter the first)
  repeat_last_frame  the trivial baseline: PSNR of repeating the last prompt frame, per step
  pooled_psnr[_per_step]  beside each mean PSNR: the PSNR of the squared errors pooled over
                clips (metrics.pooled_psnr). A clip whose frame did not change gives the still
                image 100 dB (the MSE floor) and lifts its mean by 100/C dB; pooled, it is one
                error of 0. Compare a world with the still image on this one
  repeat_last_tokens the same in the world's own terms: the prompt's last tokens again, decoded
                as the sampler decodes (WorldModel.copy_step). A dynamics below it does worse
                than copying its input; between it and repeat_last_frame lies what the
                tokenizer loses on a still scene
  action_effect which model ignores the action when delta-PSNR is near 0 (genie_jax/
                action_effect.py): the LAM's distinct code vectors and its decoder's next-frame
                PSNR with its own codes against random ones; the dynamics' next-frame
                cross-entropy (whole frame masked) with inferred against random actions
  action_nmi    where true actions exist (>= 0): NMI between latent action a_t and the true
                action of the same transition t -> t+1; for CoinRun also between a_t and the
                6 behavioural classes of the 15 procgen actions
  action_probe  beside the NMI: accuracy of predicting the true control (CoinRun: its class)
                from the latent action, by the majority control of each latent, fitted on one
                half of the clips and scored on the other (both ways), with the chance level
                (the fitting half's most common control)

Library functions here are host-side; the metric arithmetic lives in genie_jax.metrics.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from genie_jax import media
from genie_jax.data.games import COINRUN_CLASS_NAMES, coinrun_action_class
from genie_jax.errors import UserError
from genie_jax.metrics import (codebook_usage, contingency_table, delta_psnr_per_step,
                               delta_psnr_stderr_per_step,
                               normalized_mutual_information, per_step_mean, pooled_psnr, psnr,
                               ssim, value_at_step)
from genie_jax.models.layers import to_unit_float

def episode_source_name(source, episode: int) -> str:
    """'procgen:coinrun', 'ale:pong', a file path, 'procedural', ... ('' when unknown)."""
    if hasattr(source, "metadata"):
        meta = source.metadata(episode)
        return str(meta.get("source") or meta.get("generator") or "")
    return "procedural" if type(source).__name__ == "ProceduralVideo" else ""


def is_coinrun(name: str) -> bool:
    return name == "coinrun" or name.endswith(":coinrun")


def action_nmi(latent_CA, true_CA, coinrun: bool) -> dict:
    """NMI between latent and true actions of the same transitions ([clips, transitions]);
    true actions < 0 (unknown) are left out."""
    table, _, true_ids = contingency_table(latent_CA, true_CA)
    out = {"pairs": int(table.sum()), "true_actions_seen": int(len(true_ids)),
           "nmi": normalized_mutual_information(table) if table.sum() else None}
    if coinrun:
        ctable, _, _ = contingency_table(latent_CA, coinrun_action_class(true_CA))
        out["class_nmi"] = normalized_mutual_information(ctable) if ctable.sum() else None
        out["classes"] = list(COINRUN_CLASS_NAMES)
    return out


# ---- clip selection -------------------------------------------------------------------------

def select_clips(lengths, num_episodes: int, clip_len: int, seed: int, per_episode: int = 1):
    """Clips from the first `num_episodes` episodes long enough for one; `per_episode` clips per
    episode, one in each of that many equal segments (so they never overlap) that can hold one.
    Starts are drawn from `seed`.

    -> (episode id per clip, start frame per clip, number of too-short episodes skipped)."""
    rng = np.random.default_rng(seed)
    eps, starts, short, used = [], [], 0, 0
    for e, n in enumerate(np.asarray(lengths)):
        if used >= num_episodes:
            break
        if n < clip_len:
            short += 1
            continue
        used += 1
        k = max(1, min(per_episode, int(n) // clip_len))
        seg = int(n) // k
        for j in range(k):
            eps.append(e)
            starts.append(j * seg + int(rng.integers(0, seg - clip_len + 1)))
    return eps, starts, short


def load_clips(source, eps, starts, clip_len: int):
    """-> frames uint8 [C, T, H, W, ch], actions int32 [C, T] (-1 where unknown)."""
    frames, actions = [], []
    for e, s in zip(eps, starts):
        w = source.read_window(e, s, clip_len)
        frames.append(np.asarray(w["frames"], np.uint8))
        a = w.get("actions")
        actions.append(np.full(clip_len, -1, np.int32) if a is None else np.asarray(a, np.int32))
    return np.stack(frames), np.stack(actions)


def window_starts(total: int, window: int) -> list[int]:
    """Starts of windows of `window` frames that cover the transitions 0..total-2 of a clip:
    consecutive windows share one frame; the last one is moved back to end at the clip's end."""
    if window < 2 or total < 2:
        raise ValueError(f"need window >= 2 and clip >= 2 frames; got {window}, {total}")
    window = min(window, total)
    starts = list(range(0, total - window + 1, window - 1))
    if starts[-1] + window < total:
        starts.append(total - window)
    return starts


def infer_actions_windowed(infer, frames_BTHWC, window: int) -> np.ndarray:
    """Latent actions [B, T-1] of a clip of any length, from windows of `window` frames (fixed
    shape: one compile). infer(frames [B, w, ...]) -> codes [B, w-1]."""
    T = frames_BTHWC.shape[1]
    window = min(window, T)
    out = np.full((frames_BTHWC.shape[0], T - 1), -1, np.int64)
    for s in window_starts(T, window):
        out[:, s:s + window - 1] = np.asarray(infer(frames_BTHWC[:, s:s + window]))
    return out


# ---- evaluation ---------------------------------------------------------------------------

@dataclasses.dataclass
class EvalSettings:
    episodes: int = 32
    clips_per_episode: int = 1
    rollout_frames: int = 10
    prompt_frames: int = 1
    seed: int = 0
    split: str = "test"
    batch_size: int = 8
    delta_t: int = 4
    steps: int | None = None          # MaskGIT steps (default: the run's sampling.steps)
    temperature: float | None = None  # default: the run's sampling.temperature
    pick: str | None = None           # 'sample' | 'mbr' (default: the run's sampling.pick)
    guidance: float | None = None     # action guidance (default: the run's sampling.guidance)
    grid_clips: int = 4
    step: int | None = None           # checkpoint step (default: newest readable)


def probe_accuracy(latent_CA, control_CA, folds: int = 2) -> dict:
    """Cross-fitted latent -> control probe: clips are split into `folds` interleaved parts; each
    part is scored by the majority-control decoder fitted on the others. Controls < 0 (unknown)
    are left out. -> {pairs, accuracy, chance} (None where no fold has both parts)."""
    from genie_jax.actions_fit import counts_table, latent_decoder
    latent_CA, control_CA = np.asarray(latent_CA, np.int64), np.asarray(control_CA, np.int64)
    A = int(latent_CA.max()) + 1 if latent_CA.size else 1
    K = int(control_CA.max()) + 1 if control_CA.size and control_CA.max() >= 0 else 0
    hits = chance_hits = n = 0
    for f in range(folds):
        test = np.arange(len(latent_CA)) % folds == f
        fl, fc = latent_CA[~test].reshape(-1), control_CA[~test].reshape(-1)
        tl, tc = latent_CA[test].reshape(-1), control_CA[test].reshape(-1)
        fl, fc, tl, tc = fl[fc >= 0], fc[fc >= 0], tl[tc >= 0], tc[tc >= 0]
        if not len(fc) or not len(tc):
            continue
        counts = counts_table(fl, fc, K, A)
        hits += int(np.sum(latent_decoder(counts)[tl] == tc))
        chance_hits += int(np.sum(tc == int(np.argmax(counts.sum(1)))))
        n += len(tc)
    return {"pairs": n, "folds": folds, "accuracy": hits / n if n else None,
            "chance": chance_hits / n if n else None}


def true_action_latents(workdir: str, source, eps, true_CA, num_actions: int):
    """The clips' true actions as latent ids through WORKDIR/action_map.json (a fitted map):
    -> (latent ids [C, T], -1 where the action is unknown or its control has no latent), or
    None when the run has no fitted map."""
    from genie_jax.action_map import FILENAME, load_action_map
    from genie_jax.actions_fit import controls_of
    if not os.path.exists(os.path.join(workdir, FILENAME)):
        return None
    amap = load_action_map(workdir, num_actions)
    if amap.source != "fit":
        return None
    controls = controls_of(source, eps, "the evaluation clips")
    names = controls.names or tuple(f"ACTION_{i}" for i in range(int(np.max(true_CA)) + 1))
    latent_of = dict(zip(amap.names, amap.latent))
    table = np.asarray([latent_of.get(n, -1) for n in names], np.int64)
    control = controls.classify(true_CA)
    ok = (control >= 0) & (control < len(table))
    out = np.full(control.shape, -1, np.int64)
    out[ok] = table[control[ok]]
    return out


def _pooled(psnr_CS) -> dict:
    """PSNR of the errors pooled over clips (metrics.pooled_psnr): over all, and per step."""
    return {"pooled_psnr": pooled_psnr(psnr_CS),
            "pooled_psnr_per_step": pooled_psnr(psnr_CS, axis=0)}


def _rollout_section(roll: dict, tag: str) -> dict:
    """Mean and per-step PSNR/SSIM of one rollout condition's [clips, steps] arrays, and pooled."""
    p, q = roll[f"psnr_{tag}"], roll[f"ssim_{tag}"]
    return {"psnr": float(np.mean(p)), "ssim": float(np.mean(q)),
            "psnr_per_step": per_step_mean(p), "ssim_per_step": per_step_mean(q), **_pooled(p)}


def _pad_batch(x: np.ndarray, B: int) -> np.ndarray:
    if len(x) == B:
        return x
    return np.concatenate([x, np.repeat(x[:1], B - len(x), axis=0)])


def _check_settings(s: EvalSettings) -> None:
    if s.split == "train":
        raise UserError("eval runs on held-out data: --split must not be 'train' (use test or val)")
    for name in ("episodes", "clips_per_episode", "rollout_frames", "prompt_frames", "batch_size", "delta_t"):
        if getattr(s, name) < 1:
            raise UserError(f"--{name} must be >= 1; got {getattr(s, name)}")


def open_heldout(cfg, split: str):
    if split == "train":
        raise UserError("held-out data only: the split must not be 'train'")
    return open_split(cfg, split)


def open_split(cfg, split: str, data_dir: str | None = None):
    """`split` of the run's data (or of the ArrayRecord dataset `data_dir`), errors in one line."""
    from genie_jax.data.sources import open_episode_source
    try:
        if data_dir:
            from genie_jax.data.shards import open_source
            return open_source(data_dir, split)
        return open_episode_source(cfg.data, split)
    except UserError:
        raise
    except (ValueError, IndexError) as e:
        raise UserError(f"cannot open split {split!r} of the run's data "
                        f"(data.source={cfg.data.source!r}): {e}") from None


def load_world_model(workdir: str, *, steps=None, temperature=None, step=None, pick=None,
                     guidance=None):
    """WorldModel.load with one-line errors that name the workdir."""
    from genie_jax.sampling import WorldModel
    if not os.path.isdir(workdir):
        raise UserError(f"workdir {workdir!r} does not exist")
    try:
        return WorldModel.load(workdir, step=step, steps=steps, temperature=temperature,
                               pick=pick, guidance=guidance)
    except UserError as e:
        msg = str(e)
        raise UserError(msg if workdir in msg else f"{workdir}: {msg}") from None
    except (KeyError, AttributeError, ValueError) as e:  # e.g. a config.json of another version
        raise UserError(f"{workdir}: not a usable dynamics run ({type(e).__name__}: {e})") from None


def load_lam_inference(workdir: str):
    """-> (frames [B, w, ...] -> latent action codes [B, w-1], the window w) of a pixel LAM run,
    or of the LAM a dynamics run uses. Windows of at most 4 frames, the LAM's training length."""
    import ml_collections
    from genie_jax.runs import Run
    from genie_jax.stages.base import load_frozen
    from genie_jax.stages.dynamics import lam_actions
    from genie_jax.stages.lam import build_lam
    from genie_jax.stages.video_vq import frozen_run

    cfg = Run(workdir, "workdir").config()
    if cfg.get("stage") == "lam":
        if cfg.model.get("input", "pixels") != "pixels":
            raise UserError(f"{workdir}: a token-input LAM reads a tokenizer; pass a dynamics "
                            "run that uses it")
        lam = build_lam(cfg.model)
        # the run as a frozen input, as a dynamics stage reads it (its meta checked)
        fi = frozen_run("lam", ml_collections.ConfigDict(dict(workdir=workdir, model=cfg.model)),
                        lam, cfg.model)
        params = load_frozen({"lam": fi}, {"lam": fi.abstract()})["lam"]
        infer = jax.jit(lambda f: lam_actions(lam, params, f))
    else:
        wm = load_world_model(workdir)
        if "lam" not in wm.params:
            raise UserError(f"{workdir}: this run has no LAM")
        lam, infer = wm.lam, wm.infer_actions
    return infer, max(2, min(lam.max_frames, 4))


def evaluate(workdir: str, settings: EvalSettings, log=print) -> tuple[dict, dict]:
    """-> (results: JSON-able numbers and settings, artifacts: arrays for the plot/grid)."""
    from genie_jax.sampling import rollout
    from genie_jax.runs import Run

    t_start = time.perf_counter()
    s = settings
    _check_settings(s)
    wm = load_world_model(workdir, steps=s.steps, temperature=s.temperature, step=s.step,
                          pick=s.pick, guidance=s.guidance)
    cfg = wm.config
    trained_on_true = str(cfg.lam.get("mode", "frozen")) == "true_actions"
    has_lam = "lam" in wm.params
    if not has_lam and not trained_on_true:
        raise UserError(f"{workdir}: the run has no LAM params; cannot infer latent actions")
    K, S = s.prompt_frames, s.rollout_frames
    clip_len = K + S
    nf = int(cfg.data.num_frames)
    source = open_heldout(cfg, s.split)
    eps, starts, short = select_clips(source.episode_lengths(), s.episodes, clip_len, s.seed,
                                      s.clips_per_episode)
    if not eps:
        raise UserError(f"no {s.split!r} episode of the run's data has {clip_len} frames "
                        f"(--prompt_frames + --rollout_frames); use shorter rollouts")
    names = sorted({episode_source_name(source, e) for e in eps})
    coinrun = bool(names) and all(is_coinrun(n) for n in names)
    frames_all, true_all = load_clips(source, eps, starts, clip_len)
    C = len(eps)
    B = min(s.batch_size, C)
    A = int(wm.dynamics.num_actions)
    log(f"eval: {C} clips of {clip_len} frames from split {s.split!r} ({names or ['?']}); "
        f"MaskGIT steps {wm.steps}, temperature {wm.temperature}, pick {wm.pick}"
        + (f", action guidance {wm.guidance}" if wm.guidance != 1.0 else ""))

    tok = wm.tokenizer
    tok_window = min(nf, clip_len, tok.max_frames)

    @jax.jit
    def recon_fn(params, frames):
        (recon, tokens, _), _ = tok.apply({"params": params}, frames, mutable=["vq_stats"])
        recon = jnp.clip(recon, 0, 1)
        target = to_unit_float(frames)
        return psnr(recon, target), ssim(recon, target), tokens

    metric_fn = jax.jit(lambda a, b: (psnr(a, to_unit_float(b)), ssim(a, to_unit_float(b))))
    lam_window = max(2, min(nf, wm.lam.max_frames, clip_len))
    rng = np.random.default_rng(s.seed + 1)
    random_actions = rng.integers(0, A, size=(C, S))
    # Rollouts driven by the true actions: recorded ids (a run trained on them) or their latent
    # ids through the fitted action map; clips with an action that has none are left out.
    if trained_on_true:
        true_ids, true_source = true_all.astype(np.int64), "dataset"
        bad = (true_ids[:, :clip_len - 1] < 0) | (true_ids[:, :clip_len - 1] >= A)
        if bad.any():
            raise UserError(f"{workdir} was trained on true actions (lam.mode=true_actions) but "
                            f"the {s.split!r} clips have actions outside [0, {A}) (-1: unknown)")
    else:
        true_ids = true_action_latents(workdir, source, eps, true_all, A)
        true_source = "action_map" if true_ids is not None else None
    true_ok = None if true_ids is None else np.all(true_ids[:, K - 1:K - 1 + S] >= 0, axis=1)
    main_tag = "inf" if has_lam else "true"

    tok_psnr, tok_ssim, tok_counts = [], [], np.zeros(tok.num_codes)
    latent = np.zeros((C, clip_len - 1), np.int64)
    roll = {f"{m}_{tag}": np.full((C, S), np.nan) for m in ("psnr", "ssim")
            for tag in ("inf", "true", "rand", "shuf", "repeat", "repeat_tokens")}
    G = min(s.grid_clips, C)
    shown = {"inf": [], "true": [], "rand": []}  # the conditions the grid and GIF show
    for b0 in range(0, C, B):
        n = min(B, C - b0)
        fr = jnp.asarray(_pad_batch(frames_all[b0:b0 + n], B))
        # tokenizer: non-overlapping windows of tok_window frames
        for w0 in range(0, clip_len - tok_window + 1, tok_window):
            p, q, tokens = recon_fn(wm.params["tokenizer"], fr[:, w0:w0 + tok_window])
            tok_psnr.append(np.asarray(p)[:n].reshape(-1))
            tok_ssim.append(np.asarray(q)[:n].reshape(-1))
            tok_counts += np.bincount(np.asarray(tokens)[:n].reshape(-1),
                                      minlength=tok.num_codes)[:tok.num_codes]
        prompt, real = fr[:, :K], fr[:, K:]
        conditions = []
        tb = None if true_ids is None else _pad_batch(true_ids[b0:b0 + n], B)
        if has_lam:
            codes = infer_actions_windowed(wm.infer_actions, fr, lam_window)
            latent[b0:b0 + n] = codes[:n]
            conditions.append(("inf", codes[:, K - 1:K - 1 + S]))
            own = np.asarray(codes[:n, K - 1:K - 1 + S])
            perm = np.random.default_rng(s.seed + 2 + b0).permutation(own.size)
            conditions.append(("shuf", _pad_batch(own.reshape(-1)[perm].reshape(own.shape), B)))
            prompt_acts = codes[:, :K - 1]  # also the prompt of the true-action rollout
        else:
            prompt_acts = tb[:, :K - 1]
        if tb is not None and true_ok[b0:b0 + n].any():
            conditions.append(("true", np.maximum(tb[:, K - 1:K - 1 + S], 0)))
        conditions.append(("rand", _pad_batch(random_actions[b0:b0 + n], B)))
        pa = jnp.asarray(prompt_acts, jnp.int32)
        seed = s.seed + b0
        for tag, acts in conditions:
            gen = rollout(wm, prompt, acts, pa, seed=seed)
            p, q = metric_fn(gen, real)
            roll[f"psnr_{tag}"][b0:b0 + n] = np.asarray(p)[:n]
            roll[f"ssim_{tag}"][b0:b0 + n] = np.asarray(q)[:n]
            if b0 < G and tag in shown:  # keep the first G clips for the grid
                shown[tag].append(np.asarray(gen[:n]))
        # the trivial baseline: the last prompt frame, repeated
        still = jnp.broadcast_to(to_unit_float(prompt[:, -1:]), real.shape)
        p, q = metric_fn(still, real)
        roll["psnr_repeat"][b0:b0 + n] = np.asarray(p)[:n]
        roll["ssim_repeat"][b0:b0 + n] = np.asarray(q)[:n]
        state, copies = wm.reset(prompt, pa, seed=seed), []
        for _ in range(S):
            frame, state = wm.copy_step(state)
            copies.append(frame)
        p, q = metric_fn(jnp.stack(copies, axis=1), real)
        roll["psnr_repeat_tokens"][b0:b0 + n] = np.asarray(p)[:n]
        roll["ssim_repeat_tokens"][b0:b0 + n] = np.asarray(q)[:n]
    lam_counts = np.bincount(latent.reshape(-1), minlength=A)[:A]

    main_psnr, main_ssim = roll[f"psnr_{main_tag}"], roll[f"ssim_{main_tag}"]
    psnr_inf, psnr_rand = per_step_mean(main_psnr), per_step_mean(roll["psnr_rand"])
    ssim_inf = per_step_mean(main_ssim)
    dpsnr = delta_psnr_per_step(main_psnr, roll["psnr_rand"])
    dpsnr_se = delta_psnr_stderr_per_step(main_psnr, roll["psnr_rand"])
    dpsnr_shuf = delta_psnr_per_step(main_psnr, roll["psnr_shuf"]) if has_lam else None
    true_tr = true_all[:, :-1]  # actions[t]: transition t -> t+1, as the latent a_t
    has_true = bool(np.any(true_tr >= 0)) and has_lam
    true_section = None
    if true_ok is not None and true_ok.any():
        tp, rp = roll["psnr_true"][true_ok], roll["psnr_rand"][true_ok]
        tdelta = delta_psnr_per_step(tp, rp)
        true_section = {"source": true_source, "clips": int(true_ok.sum()),
                        "psnr": float(np.mean(tp)),
                        "ssim": float(np.mean(roll["ssim_true"][true_ok])),
                        "psnr_per_step": per_step_mean(tp), **_pooled(tp),
                        "random_actions_psnr_per_step": per_step_mean(rp),
                        "delta_psnr": value_at_step(tdelta, s.delta_t),
                        "delta_psnr_per_step": tdelta}
        if has_lam:  # the controls against the world's own codes at the wrong times
            sdelta = delta_psnr_per_step(tp, roll["psnr_shuf"][true_ok])
            true_section.update(delta_psnr_shuffled=value_at_step(sdelta, s.delta_t),
                                delta_psnr_shuffled_per_step=sdelta)
    tok_use, lam_use = codebook_usage(tok_counts), codebook_usage(lam_counts)
    effects = None
    if has_lam:  # clips have >= 2 frames (_check_settings)
        from genie_jax.action_effect import action_effects
        effects = action_effects(wm, frames_all, lam_window, batch=B, seed=s.seed)
    steps_done = Run(workdir).steps()
    results = {
        "workdir": os.path.abspath(workdir),
        "checkpoint_step": s.step if s.step is not None else (steps_done[-1] if steps_done else None),
        "settings": {
            "split": s.split, "episodes_requested": s.episodes, "episodes": len(set(eps)),
            "clips_per_episode": s.clips_per_episode, "clips": C,
            "episodes_too_short": short, "seed": s.seed, "prompt_frames": K,
            "rollout_frames": S, "batch_size": B, "maskgit_steps": wm.steps,
            "temperature": wm.temperature, "pick": wm.pick,
            "guidance": wm.guidance, "schedule": wm.schedule,
            "buffer_frames": wm.max_frames, "delta_t": s.delta_t,
            "tokenizer_window": tok_window, "lam_window": lam_window,
            "data_source": str(cfg.data.source), "data_dir": str(cfg.data.get("dir", "")),
            "episode_sources": names,
        },
        "tokenizer": {"psnr": float(np.mean(np.concatenate(tok_psnr))),
                      "ssim": float(np.mean(np.concatenate(tok_ssim))),
                      "frames": int(sum(len(x) for x in tok_psnr)),
                      "code_usage": tok_use["usage"], "code_perplexity": tok_use["perplexity"],
                      "codes_used": tok_use["codes_used"], "num_codes": tok_use["num_codes"]},
        "lam": ({"code_usage": lam_use["usage"], "code_perplexity": lam_use["perplexity"],
                 "codes_used": lam_use["codes_used"], "num_codes": lam_use["num_codes"],
                 "code_counts": [int(c) for c in lam_counts]} if has_lam else None),
        "rollout": {"actions": "lam" if has_lam else "true",
                    "psnr": float(np.mean(main_psnr)),
                    "ssim": float(np.mean(main_ssim)),
                    "psnr_per_step": psnr_inf, "ssim_per_step": ssim_inf, **_pooled(main_psnr),
                    "random_actions": _rollout_section(roll, "rand"),
                    "shuffled_actions": _rollout_section(roll, "shuf") if has_lam else None},
        "repeat_last_frame": {"psnr": float(np.mean(roll["psnr_repeat"])),
                              "ssim": float(np.mean(roll["ssim_repeat"])),
                              "psnr_per_step": per_step_mean(roll["psnr_repeat"]),
                              **_pooled(roll["psnr_repeat"])},
        "repeat_last_tokens": {"psnr": float(np.mean(roll["psnr_repeat_tokens"])),
                               "ssim": float(np.mean(roll["ssim_repeat_tokens"])),
                               "psnr_per_step": per_step_mean(roll["psnr_repeat_tokens"]),
                               **_pooled(roll["psnr_repeat_tokens"])},
        "controllability": {"t": s.delta_t, "delta_psnr": value_at_step(dpsnr, s.delta_t),
                            "delta_psnr_per_step": dpsnr,
                            # over clips, paired: how far another draw of clips could move it
                            "delta_psnr_stderr": value_at_step(dpsnr_se, s.delta_t),
                            "delta_psnr_stderr_per_step": dpsnr_se,
                            "delta_psnr_shuffled": (None if dpsnr_shuf is None else
                                                    value_at_step(dpsnr_shuf, s.delta_t)),
                            "delta_psnr_shuffled_per_step": dpsnr_shuf},
        "true_actions": true_section,
        "action_nmi": (dict(action_nmi(latent, true_tr, coinrun), coinrun=coinrun)
                       if has_true else None),
        "action_effect": effects,
        "action_probe": (dict(probe_accuracy(latent, coinrun_action_class(true_tr) if coinrun
                                             else true_tr), classes=coinrun)
                         if has_true else None),
        "sampler_compiles": int(wm.trace_count),
        "seconds": 0.0,
    }
    results["seconds"] = time.perf_counter() - t_start
    artifacts = {"real": frames_all[:G], "generated": np.concatenate(shown[main_tag])[:G],
                 "generated_random": np.concatenate(shown["rand"])[:G],
                 "prompt_frames": K, "psnr_inferred": psnr_inf, "psnr_random": psnr_rand,
                 "psnr_repeat": results["repeat_last_frame"]["psnr_per_step"],
                 "psnr_repeat_tokens": results["repeat_last_tokens"]["psnr_per_step"],
                 "psnr_true": true_section["psnr_per_step"] if true_section else None,
                 "main_actions": "LAM-inferred actions" if has_lam else "true actions"}
    return results, artifacts


def rollout_rows(real, generated, generated_random, prompt_frames: int) -> np.ndarray:
    """uint8 rows [3 * clips, T, H, W, C]: per clip the real clip, the rollout with inferred
    actions and the rollout with random actions, the latter two after the real prompt frames."""
    real = media.to_uint8(real)
    K = prompt_frames
    rows = []
    for c in range(len(real)):
        rows.append(real[c])
        for g in (generated, generated_random):
            rows.append(np.concatenate([real[c, :K], media.to_uint8(g[c])]))
    return np.stack(rows)


def write_outputs(out_dir: str, results: dict, artifacts: dict) -> dict[str, str]:
    """eval.json, psnr_per_step.png, rollouts.png and rollouts.gif in out_dir (atomic writes)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    series = {artifacts.get("main_actions", "LAM-inferred actions"): artifacts["psnr_inferred"]}
    if artifacts.get("psnr_true") is not None and results["rollout"].get("actions") != "true":
        series["true actions (action map)"] = artifacts["psnr_true"]
    series["random actions"] = artifacts["psnr_random"]
    if artifacts.get("psnr_repeat") is not None:
        series["repeat last prompt frame"] = artifacts["psnr_repeat"]
    if artifacts.get("psnr_repeat_tokens") is not None:
        series["repeat its tokens"] = artifacts["psnr_repeat_tokens"]
    paths["plot"] = media.write_png(os.path.join(out_dir, "psnr_per_step.png"), media.line_plot(
        series,
        title=f"rollout PSNR vs ground truth ({results['settings']['clips']} clips)",
        xlabel="generated frame", ylabel="PSNR (dB)"))
    rows = rollout_rows(artifacts["real"], artifacts["generated"], artifacts["generated_random"],
                        artifacts["prompt_frames"])
    H, W = rows.shape[2:4]
    rows = media.upscale(rows, media.auto_scale(H, W, 64))
    paths["grid"] = media.write_png(os.path.join(out_dir, "rollouts.png"), media.grid(rows))
    # GIF: one frame per time step; per clip a row [real | inferred | random].
    R3, T = rows.shape[:2]
    per_clip = rows.reshape(R3 // 3, 3, T, *rows.shape[2:])
    frames = np.stack([media.grid(per_clip[:, :, t]) for t in range(T)])
    paths["gif"] = media.write_gif(os.path.join(out_dir, "rollouts.gif"), frames, fps=4)
    results = dict(results, outputs={
        **{k: os.path.basename(v) for k, v in paths.items()},
        "grid_rows": "per clip: real clip; rollout with "
                     f"{artifacts.get('main_actions', 'LAM-inferred actions')}; "
                     "rollout with random actions (their first prompt_frames columns are the real "
                     "prompt)"})
    paths["json"] = media.write_text(os.path.join(out_dir, "eval.json"),
                                     json.dumps(results, indent=2))
    return paths
