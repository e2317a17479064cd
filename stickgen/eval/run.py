"""`stickgen eval`: evaluate a checkpoint (or a baseline) against held-out real data with the
frozen evaluator, repeated over generation seeds, and write `eval.json` + `eval.md` with plots.

Protocol (defaults in `EvalSettings`; every choice is recorded in eval.json["protocol"]):

- Test prompts: the test-split windows of the dataset (at most `max_prompts`, a seeded random
  subset). Each window's `description` is a prompt, its length (rounded to whole seconds, so
  generation batches well) the requested duration, its `action_label` the expected action.
- Repetition r = 0..R-1 generates one clip per prompt with seed `seed * 10**6 + r * P + i`
  (distinct for every prompt and repetition), embeds the clips with the evaluator and computes
  every metric; the report gives mean ± 95% interval over repetitions (`metrics.mean_ci`). The
  field's protocol uses R = 20 over the whole test set; the CLI default (5 repetitions of 32
  prompts, one R-precision batch) keeps a small checkpoint under 5 minutes on 2 CPU cores —
  `configs/eval.yaml` (`stickgen eval readme`) runs the full protocol for the README table.
- Multimodality uses the R samples of each prompt (so it needs R >= 2).
- Real data gets the same metrics on the same prompts' windows (the reference column); its FID
  is the floor FID(P random real train windows, real test) — the same sample size as a generated
  set — and `fid_floor_train_vs_test` the same with every train window.
- Pose MSE: the model's denoising reconstruction of test windows at fixed noise levels.
- Robustness: every prompt of the selected suites (`eval.suites`); a prompt that expects motion
  must give valid motion (finite, the requested frame count, connected segments), one that
  expects rejection must raise the generator's typed GenerationError.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import from_dict as config_from_dict
from ..errors import ConfigError, StickgenError
from . import metrics as M
from .data import Windows, load_windows, pad_clips
from .evaluator import EVALUATOR_VERSION, Evaluator, check_no_test_leak, load_evaluator

FPS = 25
NOT_COMPARABLE = ("Computed with stickgen's own evaluator (a motion encoder, action classifier and "
                  "text-motion contrastive pair trained on the train split of stickgen's data) on 2D stick "
                  "figures. These numbers are NOT comparable to published HumanML3D results (Guo et al. "
                  "2022 evaluator, 263-D SMPL features).")


@dataclass(frozen=True)
class EvalSettings:
    repeats: int = 5
    max_prompts: int | None = 32            # one R-precision batch per repetition
    seed: int = 0
    r_precision_batch: int = 32
    diversity_pairs: int = 300
    mm_pairs: int = 10
    pose_levels: tuple[float, ...] = M.POSE_MSE_LEVELS
    pose_max_windows: int | None = 32
    suites: tuple[str, ...] | None = None     # None = all suites; () = none
    suite_seeds: int = 1
    steps: int | None = None                  # sampler steps (None: the checkpoint's default)
    guidance: float | None = None
    gen_batch: int = 64
    length_unit: int = 25                     # frames: requested lengths are rounded to this
    subset: str = "pretrain"
    sources: tuple[str, ...] | None = None    # restrict the test set to these sources
    max_train_windows: int = 2000             # for the FID floor

    def to_dict(self) -> dict:
        return asdict(self)


# --- what gets evaluated ----------------------------------------------------------------------

class Candidate:
    """Something that turns prompts into motion: a checkpoint or a baseline."""

    name = "candidate"

    def info(self) -> dict:
        return {"name": self.name}

    def generate(self, prompts: Sequence[str], seconds: Sequence[float], seeds: Sequence[int]) -> list[np.ndarray]:
        raise NotImplementedError

    def pose_mse(self, w: Windows, levels: Sequence[float], seed: int) -> dict | None:
        return None


class CheckpointCandidate(Candidate):
    """A stickgen checkpoint folder or hf:// URI, through `generate.sample.MotionGenerator`."""

    def __init__(self, checkpoint: str | Path, *, steps: int | None = None, guidance: float | None = None,
                 batch: int = 64, device: str = "cpu"):
        from ..generate.sample import MotionGenerator

        self.gen = MotionGenerator(checkpoint, device=device)
        self.source = str(checkpoint)
        self.name = Path(self.source.rstrip("/")).name if not self.source.startswith("hf://") else self.source
        self.steps, self.guidance, self.batch = steps, guidance, batch

    def info(self) -> dict:
        from ..model.transformer import ModelConfig, variant_name

        cfg = self.gen.config
        return {"name": self.name, "checkpoint": self.source, "checkpoint_id": self.gen.checkpoint_id,
                "model_type": cfg["model_type"], "variant": variant_name(ModelConfig.from_dict(cfg["model"])) or "custom",
                "training_stage": cfg.get("training_stage"), "text_encoder": cfg["text_encoder"]["name"],
                "steps": int(self.steps or self.gen.default_steps),
                "guidance": float(self.gen.default_guidance if self.guidance is None else self.guidance)}

    def generate(self, prompts, seconds, seeds):
        order = np.argsort(np.asarray(seconds, np.float64), kind="stable")  # equal lengths share batches
        out: list[np.ndarray | None] = [None] * len(prompts)
        for s in range(0, len(order), self.batch):
            idx = [int(i) for i in order[s:s + self.batch]]
            anims = self.gen.generate([prompts[i] for i in idx], seconds=[float(seconds[i]) for i in idx],
                                      seeds=[int(seeds[i]) for i in idx], steps=self.steps, guidance=self.guidance)
            for i, a in zip(idx, anims):
                out[i] = a.motion
        return out  # type: ignore[return-value]

    def pose_mse(self, w, levels, seed):
        text = self.gen.embed(list(w.descriptions)).cpu().numpy()
        return M.pose_mse(self.gen.model, w.motion, w.mask, text, levels=levels, seed=seed)


class ConstantPoseCandidate(Candidate):
    """Baseline: every prompt gets the same still pose (the mean training pose, standing at
    x = 0). A sanity floor: it must score worse than real data on every distribution and
    semantics metric."""

    name = "baseline:constant-pose"

    def __init__(self, pose: np.ndarray):
        self.pose = np.asarray(pose, np.float32).reshape(48)

    @classmethod
    def from_windows(cls, w: Windows) -> ConstantPoseCandidate:
        from ..motion.skeleton import joints_to_v3, v3_to_joints

        j = v3_to_joints(w.motion[w.mask]).mean(0)  # [16, 2] mean joint positions over valid frames
        j[:, 0] -= j[0, 0]                          # pelvis at x = 0
        return cls(joints_to_v3(j))

    def generate(self, prompts, seconds, seeds):
        from ..generate.sample import validate_request

        for p, s in zip(prompts, seconds):
            validate_request(p, s, None, None)
        return [np.repeat(self.pose[None], int(round(float(s) * FPS)), axis=0) for s in seconds]

    def pose_mse(self, w, levels, seed):
        err = ((w.motion - self.pose) ** 2).mean(-1)
        per_clip = (err * w.mask).sum(1) / np.maximum(w.mask.sum(1), 1)
        return {"mean": float(per_clip.mean()), "per_level": {f"{t:g}": float(per_clip.mean()) for t in levels},
                "levels": [float(t) for t in levels], "per_clip": per_clip, "n": len(w)}


def make_candidate(spec: str, *, train: Windows | None = None, steps=None, guidance=None, batch: int = 64) -> Candidate:
    """`baseline:constant-pose`, or a checkpoint folder / hf:// URI."""
    if spec.startswith("baseline:"):
        if spec != ConstantPoseCandidate.name:
            raise ConfigError(f"unknown baseline {spec!r}; known: {ConstantPoseCandidate.name}")
        if train is None:
            raise ConfigError("the constant-pose baseline needs training windows")
        return ConstantPoseCandidate.from_windows(train)
    return CheckpointCandidate(spec, steps=steps, guidance=guidance, batch=batch)


# --- the evaluation ---------------------------------------------------------------------------

def _distribution_metrics(ev: Evaluator, enc: dict, text_emb: np.ndarray, ref_stats, rng, s: EvalSettings) -> dict:
    rp = M.r_precision(text_emb, enc["emb"], batch_size=s.r_precision_batch, top_k=3, rng=rng)
    return {
        "fid": M.frechet_distance(*M.gaussian_stats(enc["emb"]), *ref_stats),
        "r_precision_top1": rp["top1"], "r_precision_top2": rp["top2"], "r_precision_top3": rp["top3"],
        "mm_dist": rp["mm_dist"],
        "diversity": M.diversity(enc["emb"], s.diversity_pairs, rng),
    }


def _clip_metrics(motion: np.ndarray, mask: np.ndarray) -> dict:
    jit = M.jitter(motion, mask)
    phys = M.physics_summary(motion, mask)
    return {"jitter": float(jit.mean()), "smoothness": float(M.smoothness(jit).mean()),
            "physics_valid_rate": phys["physics_valid_rate"], "foot_skate_ratio": phys["foot_skate_ratio"],
            "static_ratio": phys["static_ratio"], "quality": phys["quality"]}


def evaluate(candidate: Candidate, data_dir: str | Path, evaluator: Evaluator, settings: EvalSettings = EvalSettings(),
             *, log: Callable[[str], None] | None = print) -> tuple[dict, dict]:
    """Run the whole protocol. Returns (result, artefacts): `result` is what eval.json holds;
    `artefacts` holds arrays for the report (sample clips per action)."""
    log = log or (lambda m: None)
    s = settings
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 2)
        return time.perf_counter()

    t0 = time.perf_counter()
    test = load_windows(data_dir, ("test",), subset=s.subset, sources=s.sources)
    check_no_test_leak(evaluator, test.clip_ids)
    if test.text_encoder and test.text_encoder != evaluator.text_encoder_name:
        raise ConfigError(f"the dataset's text embeddings come from {test.text_encoder!r} but the evaluator "
                          f"uses {evaluator.text_encoder_name!r}")
    train = load_windows(data_dir, ("train",), subset=s.subset, sources=s.sources)
    rng0 = np.random.default_rng(s.seed)
    if len(train) > s.max_train_windows:
        train = train.take(np.sort(rng0.choice(len(train), s.max_train_windows, replace=False)))
    P_idx = np.arange(len(test))
    if s.max_prompts and len(test) > s.max_prompts:
        P_idx = np.sort(np.random.default_rng(s.seed).choice(len(test), s.max_prompts, replace=False))
    prompts_w = test.take(P_idx)
    P = len(prompts_w)
    if P < 2:
        raise ConfigError(f"{data_dir}: {P} test window(s); evaluation needs at least 2")
    log(f"eval: {len(test)} test windows {test.source_counts()}, {P} prompts x {s.repeats} repetitions; "
        f"evaluator {evaluator.version} ({evaluator.fingerprint})")
    t0 = lap("load_data", t0)

    # real data: reference embeddings and the floor
    enc_test = evaluator.encode(test.motion, test.mask)
    ref_stats = M.gaussian_stats(enc_test["emb"])
    enc_train = evaluator.encode(train.motion, train.mask)
    fid_floor = M.frechet_distance(*M.gaussian_stats(enc_train["emb"]), *ref_stats)
    text_emb = evaluator.embed_text(prompts_w.text_embedding)
    enc_real = {k: v[P_idx] for k, v in enc_test.items()}
    real_clip = _clip_metrics(prompts_w.motion, prompts_w.mask)
    real_pred = [evaluator.classes[i] for i in enc_real["logits"].argmax(1)]
    real_acc = M.action_accuracy(real_pred, prompts_w.action_labels, evaluator.classes)
    real_full_acc = M.action_accuracy([evaluator.classes[i] for i in enc_test["logits"].argmax(1)],
                                      test.action_labels, evaluator.classes)
    real_reps = []
    for r in range(s.repeats):
        rng = np.random.default_rng([s.seed, r])
        d = _distribution_metrics(evaluator, enc_real, text_emb, ref_stats, rng, s)
        # the real row's FID: P random *train* windows vs the test set, the same sample size as a
        # generated set (FID is biased by sample size), so it is the floor a perfect model reaches
        sub = rng.choice(len(train), min(P, len(train)), replace=False)
        d["fid"] = M.frechet_distance(*M.gaussian_stats(enc_train["emb"][sub]), *ref_stats)
        real_reps.append({**d, **real_clip, "action_accuracy": real_acc["accuracy"], "valid_rate": 1.0})
    t0 = lap("real_metrics", t0)

    # generation: every prompt x every repetition, in one batched call
    frames = np.clip(np.round(prompts_w.n_frames / s.length_unit) * s.length_unit, s.length_unit, 250).astype(int)
    seconds = (frames / FPS).tolist()
    seeds = [s.seed * 10 ** 6 + r * P + i for r in range(s.repeats) for i in range(P)]
    all_prompts = list(prompts_w.descriptions) * s.repeats
    clips = candidate.generate(all_prompts, seconds * s.repeats, seeds)
    t0 = lap("generate", t0)
    log(f"eval: generated {len(clips)} clips in {timings['generate']:.1f} s")

    bad = [(i, why) for i, c in enumerate(clips) for ok, why in [M.valid_motion(c, int(frames[i % P]))] if not ok]
    motion, mask = pad_clips(clips)
    finite = np.isfinite(motion).all(axis=(1, 2))
    motion[~finite] = 0.0  # non-finite clips are counted invalid and embedded as a zero figure
    enc_all = evaluator.encode(motion, mask)
    gen_reps = []
    pred_all = [evaluator.classes[i] for i in enc_all["logits"].argmax(1)]
    emb_pr = enc_all["emb"].reshape(s.repeats, P, -1).transpose(1, 0, 2)  # [P, R, D]
    for r in range(s.repeats):
        sl = slice(r * P, (r + 1) * P)
        rng = np.random.default_rng([s.seed, r])
        enc_r = {k: v[sl] for k, v in enc_all.items()}
        d = _distribution_metrics(evaluator, enc_r, text_emb, ref_stats, rng, s)
        d.update(_clip_metrics(motion[sl], mask[sl]))
        d["action_accuracy"] = M.action_accuracy(pred_all[sl], prompts_w.action_labels, evaluator.classes)["accuracy"]
        d["multimodality"] = M.multimodality(emb_pr, s.mm_pairs, rng) if s.repeats >= 2 else float("nan")
        d["valid_rate"] = float(np.mean([M.valid_motion(c, int(frames[i]))[0] for i, c in enumerate(clips[sl])]))
        gen_reps.append(d)
    gen_acc = M.action_accuracy(pred_all, list(prompts_w.action_labels) * s.repeats, evaluator.classes)
    t0 = lap("generated_metrics", t0)

    # Pose MSE on test windows
    pw = prompts_w if not s.pose_max_windows or P <= s.pose_max_windows else prompts_w.take(np.arange(s.pose_max_windows))
    pm = candidate.pose_mse(pw, s.pose_levels, s.seed)
    t0 = lap("pose_mse", t0)

    # robustness suites
    robust = robustness(candidate, evaluator, s) if s.suites != () else None
    t0 = lap("robustness", t0)

    summarise = lambda reps: {k: M.mean_ci([x[k] for x in reps]) for k in reps[0]}  # noqa: E731
    real = summarise(real_reps)
    real["multimodality"] = M.mean_ci([])
    gen = summarise(gen_reps)
    if pm is not None:
        gen["pose_mse"] = {**M.mean_ci(pm["per_clip"]), "values": [], "per_level": pm["per_level"],
                           "levels": pm["levels"], "interval_over": "test windows"}
        real["pose_mse"] = {**M.mean_ci([0.0] * 2), "note": "real motion reconstructs itself exactly"}
    per_action = {}
    for a in sorted(set(real_acc["per_action"]) | set(gen_acc["per_action"])):
        per_action[a] = {"n_prompts": real_acc["per_action"].get(a, {}).get("n", 0),
                         "real": real_acc["per_action"].get(a, {}).get("accuracy", float("nan")),
                         "generated": gen_acc["per_action"].get(a, {}).get("accuracy", float("nan"))}

    result = {
        "format": "stickgen-eval", "format_version": 1, "not_comparable": NOT_COMPARABLE,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "candidate": candidate.info(),
        "evaluator": evaluator.describe() | {"real_test_action_accuracy": real_full_acc["accuracy"],
                                             "real_test_n": real_full_acc["n"]},
        "data": {"dir": str(data_dir), "subset": s.subset, "test_windows": len(test), "test_sources": test.source_counts(),
                 "test_fingerprint": test.fingerprint(), "prompts": P, "prompt_fingerprint": prompts_w.fingerprint(),
                 "train_windows_for_floor": len(train), "text_encoder": test.text_encoder},
        "protocol": {**s.to_dict(), "seed_formula": "seed*10**6 + repetition*prompts + prompt_index",
                     "interval": "95% t-interval of the mean over repetitions",
                     "r_precision_batch_used": min(s.r_precision_batch, P),
                     "embedding": f"evaluator co-embedding ({evaluator.model.cfg.embed_dim}-d, unit norm)"},
        "real": real, "generated": gen,
        "fid_floor_train_vs_test": fid_floor,
        "per_action": per_action,
        "invalid_clips": [{"prompt": all_prompts[i], "seed": seeds[i], "reason": why} for i, why in bad[:20]],
        "n_invalid_clips": len(bad),
        "robustness": robust,
        "timings_s": timings | {"total": round(time.perf_counter() - t_start, 2)},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "load_avg": list(_loadavg())},
    }
    art = {"clips": clips, "frames": frames, "prompts": prompts_w, "preds": pred_all}
    return result, art


def _loadavg() -> tuple[float, ...]:
    try:
        import os

        return tuple(round(x, 2) for x in os.getloadavg())
    except (OSError, AttributeError):
        return ()


def robustness(candidate: Candidate, evaluator: Evaluator, s: EvalSettings) -> dict:
    """Run every prompt of the selected suites (see `eval.suites`) and score each suite."""
    from ..generate.sample import GenerationError
    from .suites import get_suites

    out: dict = {"suites": {}}
    suites = get_suites(s.suites)
    # every prompt that expects motion, of every suite, in one batched call (lengths batch together)
    want = {suite.name: [(k, p, s.seed + j) for k, p in enumerate(suite.prompts) for j in range(s.suite_seeds)]
            for suite in suites}
    motion_req = [(name, k, p, seed) for name, w in want.items() for k, p, seed in w if p.expect == "motion"]
    got: dict[tuple[str, int, int], np.ndarray | Exception] = {}
    if motion_req:
        try:
            res = candidate.generate([p.text for _, _, p, _ in motion_req], [p.seconds for _, _, p, _ in motion_req],
                                     [seed for *_, seed in motion_req])
            got.update({(name, k, seed): m for (name, k, _, seed), m in zip(motion_req, res)})
        except Exception:  # noqa: BLE001 - retry one by one to pin the failure on its prompt
            for name, k, p, seed in motion_req:
                try:
                    got[(name, k, seed)] = candidate.generate([p.text], [p.seconds], [seed])[0]
                except Exception as e:  # noqa: BLE001
                    got[(name, k, seed)] = e
    for suite in suites:
        recs = []
        for k, p, seed in want[suite.name]:
            rec = {"id": p.id, "seed": seed, "expect": p.expect, "seconds": p.seconds}
            if p.expect == "reject":
                try:
                    candidate.generate([p.text], [p.seconds], [seed])
                    rec.update(outcome="accepted", ok=False, reason="expected a GenerationError, got motion")
                except GenerationError as e:
                    rec.update(outcome="rejected", ok=True, reason=str(e)[:200])
                except Exception as e:  # noqa: BLE001
                    rec.update(outcome="crashed", ok=False, reason=f"{type(e).__name__}: {e}"[:200])
            else:
                m = got[(suite.name, k, seed)]
                if isinstance(m, Exception):
                    kind = "rejected" if isinstance(m, (GenerationError, StickgenError)) else "crashed"
                    rec.update(outcome=kind, ok=False, reason=f"{type(m).__name__}: {m}"[:200])
                else:
                    ok, why = M.valid_motion(m, int(round(p.seconds * FPS)))
                    rec.update(outcome="motion" if ok else "invalid_motion", ok=ok, reason=why, motion=m, action=p.action)
            recs.append(rec)
        clips = [r.pop("motion") for r in recs if "motion" in r and r["ok"]]
        actions = [r.pop("action") for r in recs if "action" in r and r["ok"]]
        for r in recs:
            r.pop("motion", None)
            r.pop("action", None)
        st: dict = {"n": len(recs), "expect_degradation": suite.expect_degradation,
                    "expected_outcome_rate": float(np.mean([r["ok"] for r in recs])),
                    "n_motion_expected": sum(r["expect"] == "motion" for r in recs),
                    "n_reject_expected": sum(r["expect"] == "reject" for r in recs)}
        if clips:
            mo, ma = pad_clips(clips)
            st.update(_clip_metrics(mo, ma))
            lab = [(i, a) for i, a in enumerate(actions) if a]
            if lab:
                pred = evaluator.classify(mo[[i for i, _ in lab]], ma[[i for i, _ in lab]])
                st["action_accuracy"] = M.action_accuracy(pred, [a for _, a in lab], evaluator.classes)["accuracy"]
        st["failures"] = [r for r in recs if not r["ok"]]
        st["prompts"] = recs
        out["suites"][suite.name] = st
    scored = out["suites"]
    adv = [v for v in scored.values() if v["expect_degradation"] and "physics_valid_rate" in v]
    base = [v for v in scored.values() if not v["expect_degradation"] and "physics_valid_rate" in v]
    out["all_expected_outcomes"] = all(v["expected_outcome_rate"] == 1.0 for v in scored.values())
    out["n_failures"] = sum(len(v["failures"]) for v in scored.values())
    if adv:
        out["adversarial_physics_valid_rate"] = float(np.mean([v["physics_valid_rate"] for v in adv]))
    if base:
        out["baseline_physics_valid_rate"] = float(np.mean([v["physics_valid_rate"] for v in base]))
    if adv and base:
        out["robustness_gap"] = out["baseline_physics_valid_rate"] - out["adversarial_physics_valid_rate"]
    return out


# --- entry point used by the CLI ----------------------------------------------------------------

def default_evaluator_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "evaluator"


def get_evaluator(data_dir: str | Path, evaluator: str | Path | None, *, subset: str = "pretrain",
                  log: Callable[[str], None] | None = print) -> Evaluator:
    """The evaluator at `evaluator`, or the dataset's own (`DATA/evaluator`), trained on first use."""
    from .evaluator import train_evaluator

    path = Path(evaluator) if evaluator else default_evaluator_path(data_dir)
    if not (path / "model.safetensors").exists():
        if evaluator:
            raise ConfigError(f"{path}: no evaluator checkpoint there (train one: stickgen eval train-evaluator)")
        if log:
            log(f"no evaluator at {path}: training one on the train split (once per dataset)")
        train_evaluator(data_dir, path, subset=subset, log=log)
    ev = load_evaluator(path)
    if ev.version != EVALUATOR_VERSION:
        raise ConfigError(f"{path}: evaluator version {ev.version!r}; this code computes {EVALUATOR_VERSION!r} "
                          "metrics. Retrain it (stickgen eval train-evaluator) to compare with current numbers.")
    return ev


def run_eval(checkpoint: str, data_dir: str | Path, out_dir: str | Path, *, evaluator: str | Path | None = None,
             settings: EvalSettings = EvalSettings(), report: bool = True,
             log: Callable[[str], None] | None = print) -> dict:
    """Evaluate, write out_dir/eval.json (+ eval.md and plots), return the result."""
    from .report import write_report

    ev = get_evaluator(data_dir, evaluator, subset=settings.subset, log=log)
    train = load_windows(data_dir, ("train",), subset=settings.subset, sources=settings.sources) \
        if checkpoint.startswith("baseline:") else None
    cand = make_candidate(checkpoint, train=train, steps=settings.steps, guidance=settings.guidance,
                          batch=settings.gen_batch)
    result, art = evaluate(cand, data_dir, ev, settings, log=log)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(_jsonable(result), indent=2, allow_nan=True) + "\n")
    if report:
        t0 = time.perf_counter()
        write_report(result, art, out)
        result["timings_s"]["report"] = round(time.perf_counter() - t0, 2)
        (out / "eval.json").write_text(json.dumps(_jsonable(result), indent=2, allow_nan=True) + "\n")
    return result


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return None if not np.isfinite(v) else v
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def settings_from_dict(d: dict | None) -> EvalSettings:
    """configs/eval.yaml `settings:` -> EvalSettings (strict: unknown keys and bad types are errors)."""
    return config_from_dict(EvalSettings, dict(d or {}), "eval settings")


def run_readme(config_path: str | Path, log: Callable[[str], None] | None = print) -> Path:
    """Evaluate every checkpoint of configs/eval.yaml with one evaluator, one test set and one
    protocol, and write the README results table (`report.results_table`) to `table`."""
    import yaml

    from .report import results_table

    cfg = yaml.safe_load(Path(config_path).read_text()) or {}
    unknown = set(cfg) - {"data", "evaluator", "out", "table", "settings", "checkpoints"}
    if unknown:
        raise ConfigError(f"{config_path}: unknown keys {sorted(unknown)}")
    for k in ("data", "checkpoints"):
        if not cfg.get(k):
            raise ConfigError(f"{config_path}: '{k}' is required")
    settings = settings_from_dict(cfg.get("settings"))
    out = Path(cfg.get("out") or "eval")
    paths, names = [], []
    for c in cfg["checkpoints"]:
        if not isinstance(c, dict) or "path" not in c:
            raise ConfigError(f"{config_path}: each checkpoint needs 'path' (and optionally 'name')")
        name = str(c.get("name") or Path(str(c["path"])).name)
        d = out / name.replace(" ", "_").replace("/", "_").replace(":", "-")
        if log:
            log(f"== {name}: {c['path']}")
        run_eval(str(c["path"]), cfg["data"], d, evaluator=cfg.get("evaluator"), settings=settings, log=log)
        paths.append(d / "eval.json")
        names.append(name)
    table = Path(cfg.get("table") or out / "results.md")
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(results_table(paths, names))
    return table


__all__ = ["EvalSettings", "Candidate", "CheckpointCandidate", "ConstantPoseCandidate", "make_candidate",
           "evaluate", "robustness", "run_eval", "run_readme", "get_evaluator", "settings_from_dict", "NOT_COMPARABLE"]
