"""stickgen.eval: metric definitions with known answers, the frozen evaluator (split discipline,
checkpoint round trip, reproducibility), baselines, robustness suites and `stickgen eval` end to
end on a tiny random checkpoint. Data: seeded synthetic clips written in the dataset schema
(no shared data needed); the text encoder is the instant test encoder."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stickgen.eval import metrics as M

ENC = "hash-384"


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def eval_data(tmp_path_factory):
    """A small dataset in the window schema: 8 synthetic clips per action (~112 windows)."""
    from stickgen.eval.data import write_dataset
    from stickgen.motion.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("evaldata")
    paths = synthesize_dataset(root / "bvh", n_per_action=8, seed=3)
    return write_dataset(paths, root / "data", encoder=ENC)


@pytest.fixture(scope="session")
def tiny_evaluator(eval_data, tmp_path_factory):
    from stickgen.eval.evaluator import (
        EvaluatorConfig,
        TrainRecipe,
        load_evaluator,
        train_evaluator,
    )

    out = tmp_path_factory.mktemp("evaluator") / "ev"
    train_evaluator(eval_data, out, cfg=EvaluatorConfig(channels=48, blocks=3, hidden=96, embed_dim=16),
                    recipe=TrainRecipe(steps=150, batch_size=48, seed=0, threads=1), log=None)
    return load_evaluator(out)


# --- metric definitions ---------------------------------------------------------------------------

def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12))
    assert M.fid(a, a) == pytest.approx(0.0, abs=1e-6)
    # same covariance, mean moved by s in every dim: exactly |shift|^2 = 12 s^2
    prev = 0.0
    for s in (0.1, 0.5, 1.0, 2.0):
        d = M.fid(a, a + s)
        assert d == pytest.approx(12 * s * s, rel=1e-6)
        assert d > prev
        prev = d


def test_frechet_distance_uses_a_true_matrix_square_root():
    # diag(1, 4) vs diag(4, 1): tr(S1 + S2 - 2 sqrt(S1 S2)) = 10 - 2 * (2 + 2) = 2.
    # The published trace approximation tr1 + tr2 - 2 sqrt(tr1 tr2) gives 0 here.
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 1.0])
    assert M.frechet_distance(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(2.0, abs=1e-9)
    # non-commuting covariances: agrees with the closed form through the symmetric square root
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    s1, s2 = A @ A.T + np.eye(5), B @ B.T + np.eye(5)
    import scipy.linalg

    r1 = scipy.linalg.sqrtm(s1).real
    want = np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    assert M.frechet_distance(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(want, rel=1e-6)


def test_r_precision_matched_pairs_beat_mismatched():
    rng = np.random.default_rng(0)
    text = rng.standard_normal((96, 8))
    motion = text + 0.05 * rng.standard_normal(text.shape)
    good = M.r_precision(text, motion, rng=np.random.default_rng(1))
    bad = M.r_precision(text, motion[rng.permutation(96)], rng=np.random.default_rng(1))
    assert good["batch_size"] == 32 and good["n"] == 96
    assert good["top1"] > 0.95 and good["top3"] >= good["top1"]
    assert bad["top1"] < 0.2 and bad["top3"] < good["top3"]
    assert good["mm_dist"] < bad["mm_dist"]
    assert good["mm_dist"] == pytest.approx(M.multimodal_distance(text, motion), rel=1e-9)
    # identical motions for every text: all tied, never a hit
    same = M.r_precision(text, np.zeros_like(text), rng=np.random.default_rng(1))
    assert same["top1"] == 0.0 and same["top3"] == 0.0
    # fewer pairs than a batch: one batch of all of them, and the result says so
    assert M.r_precision(text[:10], motion[:10])["batch_size"] == 10


def test_diversity_and_multimodality_of_identical_samples_are_zero():
    rng = np.random.default_rng(0)
    same = np.tile(rng.standard_normal(16), (50, 1))
    assert M.diversity(same, 300, np.random.default_rng(0)) == pytest.approx(0.0, abs=1e-12)
    spread = rng.standard_normal((50, 16))
    d = M.diversity(spread, 300, np.random.default_rng(0))
    assert d == pytest.approx(math.sqrt(2 * 16), rel=0.15)  # E|x - y| for iid N(0, I_16) ~ sqrt(32)
    mm_same = M.multimodality(np.repeat(spread[:, None], 6, axis=1), 10, np.random.default_rng(0))
    assert mm_same == pytest.approx(0.0, abs=1e-12)
    assert M.multimodality(spread.reshape(10, 5, 16), 10, np.random.default_rng(0)) > 1.0


def test_mean_ci_is_the_t_interval():
    r = M.mean_ci([1, 2, 3, 4, 5])
    assert r["mean"] == 3.0 and r["n"] == 5
    assert r["ci95"] == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-5)
    assert math.isnan(M.mean_ci([2.0])["ci95"])
    assert M.mean_ci([1.0, float("nan"), 3.0])["n"] == 2


def test_jitter_matches_the_quality_report_and_smoothness_orders_clips():
    from stickgen.motion.quality import quality_report

    rng = np.random.default_rng(0)
    t = np.linspace(0, 4, 100)[:, None]
    from stickgen.motion.skeleton import joints_to_v3

    base = np.stack([np.sin(t + k) * 0.2 + k * 0.05 for k in range(16)], axis=1)
    joints = np.concatenate([base, base + 1.0], axis=-1)          # [T, 16, 2]
    smooth = joints_to_v3(joints)
    shaky = joints_to_v3(joints + 0.01 * rng.standard_normal(joints.shape))
    jit = M.jitter(np.stack([smooth, shaky]))
    assert jit[0] == pytest.approx(quality_report(smooth)["jitter"], rel=1e-6)
    assert jit[1] == pytest.approx(quality_report(shaky)["jitter"], rel=1e-6)
    s = M.smoothness(jit)
    assert 0 < s[1] < s[0] <= 1
    # padding frames are ignored
    pad = np.concatenate([shaky, np.repeat(shaky[-1:], 50, 0)])
    mask = np.arange(150) < 100
    assert M.jitter(pad[None], mask[None])[0] == pytest.approx(jit[1], rel=1e-6)


def test_action_accuracy_and_valid_motion():
    r = M.action_accuracy(["walk", "run", "wave", "walk"], ["walk", "walk", "wave", "cartwheel"], ["walk", "run", "wave"])
    assert r["n"] == 3 and r["accuracy"] == pytest.approx(2 / 3)
    assert r["per_action"]["walk"] == {"n": 2, "accuracy": 0.5}
    from stickgen.motion.skeleton import joints_to_v3

    ok = joints_to_v3(np.random.default_rng(0).standard_normal((20, 16, 2)))
    assert M.valid_motion(ok, 20) == (True, "")
    assert not M.valid_motion(ok, 25)[0]
    broken = ok.copy()
    broken[3, 0] += 1.0  # head no longer starts at the neck
    assert not M.valid_motion(broken)[0]
    nan = ok.copy()
    nan[0, 0] = np.nan
    assert not M.valid_motion(nan)[0]


# --- the evaluator ------------------------------------------------------------------------------

def test_evaluator_never_sees_test_clips(eval_data, tiny_evaluator):
    from stickgen.errors import ConfigError
    from stickgen.eval.data import load_windows
    from stickgen.eval.evaluator import check_no_test_leak

    train = load_windows(eval_data, ("train",))
    held = load_windows(eval_data, ("val", "test"))
    seen = tiny_evaluator.train_clip_ids
    assert seen == set(train.clip_ids)
    assert not seen & set(held.clip_ids)
    assert tiny_evaluator.config["extra"]["train_split"] == "train"
    check_no_test_leak(tiny_evaluator, held.clip_ids)  # no error
    with pytest.raises(ConfigError, match="trained on 1 clip"):
        check_no_test_leak(tiny_evaluator, [train.clip_ids[0]])


def test_evaluator_refuses_a_clip_that_straddles_splits(eval_data, tmp_path):
    from stickgen.errors import ConfigError
    from stickgen.eval.evaluator import TrainRecipe, train_evaluator

    t = pq.read_table(next((eval_data / "pretrain").glob("*.parquet")))
    i = t["split"].to_pylist().index("train")
    row = t.slice(i, 1)
    row = row.set_column(row.schema.get_field_index("split"), "split", pa.array(["test"]))
    bad = tmp_path / "bad" / "pretrain"
    bad.mkdir(parents=True)
    pq.write_table(pa.concat_tables([t, row.cast(t.schema)]), bad / "part-0.parquet")
    with pytest.raises(ConfigError, match="train and val/test"):
        train_evaluator(bad.parent, tmp_path / "ev", recipe=TrainRecipe(steps=1), log=None)


def test_evaluator_round_trip_and_reproducible(eval_data, tiny_evaluator, tmp_path):
    from stickgen.eval.data import load_windows
    from stickgen.eval.evaluator import (
        MODEL_TYPE,
        EvaluatorConfig,
        TrainRecipe,
        load_evaluator,
        train_evaluator,
    )
    from stickgen.model.checkpoint import load_model, read_config, save_checkpoint

    w = load_windows(eval_data, ("test",))
    e1 = tiny_evaluator.encode(w.motion, w.mask)
    assert e1["emb"].shape == (len(w), 16)
    assert np.allclose(np.linalg.norm(e1["emb"], axis=1), 1.0, atol=1e-5)
    # save again through the generic checkpoint API and rebuild from config.json alone
    save_checkpoint(tmp_path / "copy", tiny_evaluator.model, tiny_evaluator.config)
    model, cfg = load_model(tmp_path / "copy")
    assert cfg["model_type"] == MODEL_TYPE and cfg["wrapper"]["evaluator_version"] == tiny_evaluator.version
    again = load_evaluator(tmp_path / "copy")
    assert again.fingerprint == tiny_evaluator.fingerprint
    np.testing.assert_allclose(again.encode(w.motion, w.mask)["emb"], e1["emb"], atol=1e-6)
    assert read_config(tmp_path / "copy")["extra"]["train_clip_ids"]
    # same data + seed -> same weights
    small = EvaluatorConfig(channels=16, blocks=1, hidden=32, embed_dim=8)
    recipe = TrainRecipe(steps=4, batch_size=16, seed=7, threads=1)
    a = train_evaluator(eval_data, tmp_path / "a", cfg=small, recipe=recipe, log=None)
    b = train_evaluator(eval_data, tmp_path / "b", cfg=small, recipe=recipe, log=None)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_evaluator_recognises_held_out_real_windows(eval_data, tiny_evaluator):
    """A sanity floor for the evaluator itself: on held-out windows it must beat chance clearly."""
    from stickgen.eval.data import load_windows

    w = load_windows(eval_data, ("val", "test"))
    pred = tiny_evaluator.classify(w.motion, w.mask)
    acc = M.action_accuracy(pred, w.action_labels, tiny_evaluator.classes)["accuracy"]
    assert acc > 3.0 / len(tiny_evaluator.classes)


# --- baselines: a constant pose is worse than real data ---------------------------------------------

def test_constant_pose_scores_worse_than_real_data(eval_data, tiny_evaluator):
    from stickgen.eval.data import load_windows
    from stickgen.eval.run import ConstantPoseCandidate, EvalSettings, evaluate

    cand = ConstantPoseCandidate.from_windows(load_windows(eval_data, ("train",)))
    res, _ = evaluate(cand, eval_data, tiny_evaluator, EvalSettings(repeats=3, suites=("robustness_baseline",)), log=None)
    real, gen = res["real"], res["generated"]
    m = lambda d, k: d[k]["mean"]  # noqa: E731
    assert m(gen, "fid") > m(real, "fid") and m(gen, "fid") > res["fid_floor_train_vs_test"]
    assert m(gen, "r_precision_top1") < m(real, "r_precision_top1")
    assert m(gen, "r_precision_top3") < m(real, "r_precision_top3")
    assert m(gen, "mm_dist") > m(real, "mm_dist")
    assert m(gen, "action_accuracy") < m(real, "action_accuracy")
    assert m(gen, "pose_mse") > m(real, "pose_mse") == 0.0
    # "closer to real is better" metrics: the constant pose is far from real values
    # (one still pose at the prompts' different lengths: only the clip length differs)
    assert m(gen, "diversity") < 0.1 * m(real, "diversity")
    assert m(gen, "jitter") == 0.0 < m(real, "jitter")
    assert m(gen, "smoothness") == 1.0 > m(real, "smoothness")
    assert m(gen, "static_ratio") == 1.0 > m(real, "static_ratio")
    assert m(gen, "multimodality") == pytest.approx(0.0, abs=1e-6)
    # physics validity cannot tell a frozen figure from motion (a still pose is physical);
    # it is reported next to static_ratio, which does
    assert m(gen, "physics_valid_rate") == 1.0
    assert res["n_invalid_clips"] == 0 and res["robustness"]["all_expected_outcomes"]


# --- prompt suites ------------------------------------------------------------------------------------

def test_prompt_suites_agree_with_the_generator_contract():
    from stickgen.eval.suites import SUITES, get_suites, iter_prompts
    from stickgen.generate.sample import GenerationError, validate_request
    from stickgen.text.actions import ACTION_ID

    ids = [(s, p.id) for s, p in iter_prompts()]
    assert len(ids) == len(set(ids)) >= 35
    for want in ("adversarial_empty", "adversarial_long", "adversarial_contradictory",
                 "adversarial_out_of_vocabulary", "adversarial_injection", "robustness_baseline"):
        assert want in SUITES
    texts = " ".join(p.text for _, p in iter_prompts())
    assert "<script>" in texts and "ignore previous instructions" in texts
    assert any(p.text == "" for _, p in iter_prompts())
    for _, p in iter_prompts():
        assert p.expect in ("motion", "reject")
        assert p.action is None or p.action in ACTION_ID
        if p.expect == "reject":
            with pytest.raises(GenerationError):
                validate_request(p.text, p.seconds, None, None)
        else:
            validate_request(p.text, p.seconds, None, None)
    assert max(len(p.text) for _, p in iter_prompts() if p.expect == "motion") > 900
    assert [s.name for s in get_suites(["adversarial_empty,adversarial_long"])] == ["adversarial_empty", "adversarial_long"]
    with pytest.raises(KeyError):
        get_suites(["nope"])


# --- stickgen eval end to end ---------------------------------------------------------------------------

def test_stickgen_eval_cli_on_a_tiny_checkpoint(eval_data, tiny_evaluator, tmp_path):
    import torch
    from typer.testing import CliRunner

    import cli
    from stickgen.eval.report import load_metrics_for_card, results_table
    from stickgen.model.checkpoint import read_config, save_checkpoint
    from stickgen.model.denoiser import MotionDenoiser, denoiser_config
    from stickgen.model.hub import render_model_card
    from stickgen.model.transformer import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig.variant("tiny", embedding_dim=384)
    ck = save_checkpoint(tmp_path / "tiny", MotionDenoiser(cfg), denoiser_config(cfg, text_encoder=ENC))
    out = tmp_path / "out"
    r = CliRunner().invoke(cli.app, ["eval", "--checkpoint", str(ck), "--data", str(eval_data),
                                     "--evaluator", str(tiny_evaluator.path), "--repeats", "2", "--max-prompts", "8",
                                     "--suite", "adversarial_durations",
                                     "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "not comparable" in r.output
    res = json.loads((out / "eval.json").read_text())
    for f in ("eval.md", "metrics.png", "per_action.png", "grid.png"):
        assert (out / f).stat().st_size > 0
    assert res["protocol"]["repeats"] == 2 and res["data"]["prompts"] == min(8, res["data"]["test_windows"])
    assert res["generated"]["fid"]["n"] == 2 and res["generated"]["pose_mse"]["mean"] > 0
    assert set(res["generated"]["pose_mse"]["per_level"]) == {"0.1", "0.25", "0.5", "0.75", "0.9"}
    assert res["n_invalid_clips"] == 0
    rob = res["robustness"]
    assert rob["all_expected_outcomes"], rob
    assert {p["outcome"] for p in rob["suites"]["adversarial_durations"]["prompts"]} == {"motion", "rejected"}
    md = (out / "eval.md").read_text()
    assert "NOT comparable" in md and "Per-action accuracy" in md

    metrics = load_metrics_for_card(out / "eval.json", ck)
    assert metrics["eval_repeats"] == 2 and "fid" in metrics and "r_precision_top3_ci95" in metrics
    card = render_model_card(read_config(ck), metrics)
    assert "| fid |" in card
    table = results_table([out / "eval.json"], ["tiny (random init)"])
    assert table.startswith("| model | R@1") and "Real motion" in table and "tiny (random init)" in table
    assert " ± " in table and "NOT comparable" in table
    r = CliRunner().invoke(cli.app, ["eval", "table", str(out)])
    assert r.exit_code == 0 and "Real motion" in r.output
