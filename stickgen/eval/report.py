"""Reports from eval.json: `eval.md` with plots, the README results table, and the metrics a model
card gets (`stickgen push` -> `model.hub.push_checkpoint(..., metrics=load_metrics_for_card(...))`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError

#: (key, label, direction): direction "up" higher is better, "down" lower is better, "real" closer
#: to real data is better.
HEADLINE = (
    ("r_precision_top1", "R@1", "up"),
    ("r_precision_top3", "R@3", "up"),
    ("fid", "FID", "down"),
    ("mm_dist", "MM-Dist", "down"),
    ("diversity", "Diversity", "real"),
    ("multimodality", "MModality", "info"),
    ("action_accuracy", "Action acc.", "up"),
    ("jitter", "Jitter (u/s³)", "real"),
    ("smoothness", "Smoothness", "real"),
    ("physics_valid_rate", "Physics valid", "up"),
    ("foot_skate_ratio", "Foot skate", "down"),
    ("static_ratio", "Frozen frames", "real"),
    ("pose_mse", "Pose MSE", "down"),
)
ARROW = {"up": "↑", "down": "↓", "real": "→ real", "info": ""}


def _fmt(m: dict | None, digits: int = 3) -> str:
    if not m or m.get("mean") is None or not math.isfinite(m["mean"]):
        return "–"
    mean, ci = m["mean"], m.get("ci95")
    if ci is None or not math.isfinite(ci) or ci == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def load_eval(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "eval.json"
    d = json.loads(p.read_text())
    if d.get("format") != "stickgen-eval":
        raise ConfigError(f"{p}: not a stickgen eval.json")
    return d


# --- model card ----------------------------------------------------------------------------------

def load_metrics_for_card(eval_json: str | Path | dict, checkpoint: str | Path | None = None) -> dict[str, float]:
    """Flat {name: number} of the measured metrics of one eval.json, for
    `push_checkpoint(..., metrics=...)`: each headline metric's mean and 95% half-interval
    (`<name>_ci95`), the FID floor, the robustness summary, and the protocol numbers (repeats,
    prompts) so a card never shows a number without how it was measured. The card's model-index
    lists them under the evaluator's name (not comparable to HumanML3D numbers). With `checkpoint`,
    refuses an eval.json measured on other weights."""
    d = eval_json if isinstance(eval_json, dict) else load_eval(eval_json)
    if checkpoint is not None:
        from ..generate.sample import checkpoint_fingerprint

        have, want = d["candidate"].get("checkpoint_id"), checkpoint_fingerprint(Path(checkpoint))
        if have != want:
            raise ConfigError(f"eval.json was measured on checkpoint {have}, not {checkpoint} ({want})")
    out: dict[str, float] = {}
    for key, _, _ in HEADLINE:
        m = d["generated"].get(key)
        if m and m.get("mean") is not None and math.isfinite(m["mean"]):
            out[key] = float(m["mean"])
            if m.get("ci95") is not None and math.isfinite(m["ci95"]):
                out[f"{key}_ci95"] = float(m["ci95"])
    for key in ("fid", "r_precision_top3", "action_accuracy", "diversity", "jitter"):
        m = d["real"].get(key)
        if m and m.get("mean") is not None:
            out[f"real_{key}"] = float(m["mean"])
    rob = d.get("robustness") or {}
    for key in ("robustness_gap", "adversarial_physics_valid_rate", "baseline_physics_valid_rate"):
        if rob.get(key) is not None:
            out[key] = float(rob[key])
    if rob:
        out["robustness_failures"] = int(rob.get("n_failures", 0))
    out["eval_repeats"] = int(d["protocol"]["repeats"])
    out["eval_prompts"] = int(d["data"]["prompts"])
    return out


# --- README table ---------------------------------------------------------------------------------

TABLE_COLUMNS = ("r_precision_top1", "r_precision_top3", "fid", "mm_dist", "diversity", "multimodality",
                 "action_accuracy", "jitter", "physics_valid_rate", "foot_skate_ratio", "pose_mse")


def results_table(evals: Sequence[str | Path | dict], names: Sequence[str] | None = None,
                  columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A Markdown results table: "Real motion" (from the first eval.json) and one row per
    evaluated checkpoint, every cell mean ± 95% interval over that run's repetitions, plus a
    footnote with seeds, repetitions, evaluator and test set. Refuses to put runs computed with
    different evaluators or test prompts in one table (their numbers are not comparable)."""
    ds = [e if isinstance(e, dict) else load_eval(e) for e in evals]
    if not ds:
        raise ConfigError("results_table needs at least one eval.json")
    ref = ds[0]
    for d in ds[1:]:
        for what, key in (("evaluator", ("evaluator", "fingerprint")), ("test prompts", ("data", "prompt_fingerprint"))):
            if d[key[0]][key[1]] != ref[key[0]][key[1]]:
                raise ConfigError(f"cannot tabulate runs with different {what}: {d[key[0]][key[1]]} vs {ref[key[0]][key[1]]}")
    label = {k: f"{lab} {ARROW[dirn]}".strip() for k, lab, dirn in HEADLINE}
    head = ["model"] + [label[c] for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    real = ref["real"]
    lines.append("| Real motion (test split) | " + " | ".join(_fmt(real.get(c)) for c in columns) + " |")
    for i, d in enumerate(ds):
        c = d["candidate"]
        name = names[i] if names else (f"{c.get('variant', '')} `{c['name']}`".strip() if "variant" in c else c["name"])
        lines.append(f"| {name} | " + " | ".join(_fmt(d["generated"].get(col)) for col in columns) + " |")
    p = ref["protocol"]
    seeds = ", ".join(f"{d['candidate']['name']}: seed {d['protocol']['seed']} × {d['protocol']['repeats']} repetitions"
                      for d in ds)
    ev = ref["evaluator"]
    lines += [
        "",
        f"Mean ± 95% interval over repetitions ({seeds}); {ref['data']['prompts']} test prompts "
        f"(test set `{ref['data']['test_fingerprint']}`: {ref['data']['test_windows']} windows, "
        f"{ref['data']['test_sources']}), R-precision in batches of {p['r_precision_batch_used']}, diversity over "
        f"{p['diversity_pairs']} pairs, multimodality over {p['mm_pairs']} pairs per prompt. FID of real motion is the "
        f"floor: FID(as many real train windows as prompts, real test). Evaluator `{ev['version']}` "
        f"({ev['fingerprint']}), trained on the train split only; its action accuracy on real test windows is "
        f"{ev.get('real_test_action_accuracy') or float('nan'):.3f}.",
        "",
        f"*{ref['not_comparable']}*",
    ]
    return "\n".join(lines) + "\n"


# --- eval.md and plots -------------------------------------------------------------------------------

def _plot_metrics(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(k, lab, dirn) for k, lab, dirn in HEADLINE if k in result["generated"]]
    cols = 4
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows))
    for ax, (k, lab, dirn) in zip(np.ravel(axes), keys):
        g, r = result["generated"].get(k) or {}, result["real"].get(k) or {}
        vals = [r.get("mean"), g.get("mean")]
        errs = [r.get("ci95"), g.get("ci95")]
        vals = [np.nan if v is None else v for v in vals]
        errs = [0 if (e is None or not np.isfinite(e)) else e for e in errs]
        ax.bar(["real", "generated"], vals, yerr=errs, color=["#7a9cc6", "#e08a5c"], capsize=4)
        ax.set_title(f"{lab} {ARROW[dirn]}".strip(), fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in np.ravel(axes)[len(keys):]:
        ax.axis("off")
    fig.suptitle("generated vs real test motion (stickgen evaluator; not comparable to HumanML3D)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_per_action(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pa = result["per_action"]
    acts = sorted(pa)
    if not acts:
        return
    x = np.arange(len(acts))
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * len(acts) + 1.5), 3.2))
    nz = lambda v: np.nan if v is None else v  # noqa: E731
    ax.bar(x - 0.2, [nz(pa[a]["real"]) for a in acts], 0.4, label="real test clips", color="#7a9cc6")
    ax.bar(x + 0.2, [nz(pa[a]["generated"]) for a in acts], 0.4, label="generated", color="#e08a5c")
    ax.set_xticks(x, [f"{a}\n(n={pa[a]['n_prompts']})" for a in acts], rotation=60, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("evaluator action accuracy")
    ax.legend(fontsize=8, ncol=2, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grid(result: dict, art: dict, path: Path, max_actions: int = 12) -> Path | None:
    """One row per action: a generated clip for one of its prompts and, below, the real clip."""
    from ..render.render import grid_png

    w = art["prompts"]
    clips = art["clips"]
    motions, labels = [], []
    seen = set()
    for i, a in enumerate(w.action_labels):
        if a in seen or len(seen) >= max_actions:
            continue
        c = clips[i]
        if c is None or not np.isfinite(np.asarray(c)).all():
            continue
        seen.add(a)
        pred = art["preds"][i] if i < len(art["preds"]) else "?"
        motions += [np.asarray(c), w.motion[i][w.mask[i]]]
        labels += [f"generated [{a}] -> classified {pred}: {w.descriptions[i][:60]}", f"real [{a}] {w.ids[i]}"]
    if not motions:
        return None
    return grid_png(motions, path, labels=labels, frames_per_clip=6, cell_size=(120, 120))


def write_report(result: dict, art: dict | None, out_dir: str | Path) -> Path:
    """eval.md + metrics.png + per_action.png + grid.png in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _plot_metrics(result, out / "metrics.png")
    _plot_per_action(result, out / "per_action.png")
    grid = _grid(result, art, out / "grid.png") if art else None
    if grid is not None:
        grid.chmod(0o644)
    c, d, p, ev = result["candidate"], result["data"], result["protocol"], result["evaluator"]
    L = [f"# stickgen eval: {c['name']}", "",
         f"> **{result['not_comparable']}**", "",
         "## Setup", "",
         "| | |", "|---|---|",
         *[f"| {k} | {v} |" for k, v in c.items()],
         f"| data | `{d['dir']}` ({d['subset']}): {d['test_windows']} test windows {d['test_sources']}, "
         f"{d['prompts']} prompts (set `{d['prompt_fingerprint']}`) |",
         f"| evaluator | `{ev['version']}` {ev['fingerprint']} at `{ev['path']}`: {ev['train_windows']} train windows, "
         f"{len(ev['classes'])} action classes, text encoder `{ev['text_encoder']}` |",
         f"| evaluator on real test | action accuracy {ev['real_test_action_accuracy']:.3f} (n={ev['real_test_n']}) |",
         f"| protocol | {p['repeats']} repetitions (seed {p['seed']}; {p['seed_formula']}), R-precision batch "
         f"{p['r_precision_batch_used']}, diversity {p['diversity_pairs']} pairs, multimodality {p['mm_pairs']} "
         f"pairs/prompt, lengths rounded to {p['length_unit']} frames; {p['interval']} |",
         "", "## Results", "",
         "| metric | real test motion | generated |", "|---|---|---|"]
    for k, lab, dirn in HEADLINE:
        if k not in result["generated"]:
            continue
        real = result["real"].get(k)
        rs = _fmt(real) + (" (floor: real train vs test)" if k == "fid" else "")
        L.append(f"| {lab} {ARROW[dirn]} | {rs} | {_fmt(result['generated'][k])} |")
    pm = result["generated"].get("pose_mse")
    if pm:
        L += ["", "Pose MSE (body units², v3 coordinates, decoded prediction of the clean motion) at fixed noise "
              "levels t of x_t = (1 - t) x0 + t eps: " + ", ".join(f"t={t}: {v:.4f}" for t, v in pm["per_level"].items())
              + f"; interval over {pm['n']} test windows."]
    L += ["", f"{result['n_invalid_clips']} of the generated clips were invalid (non-finite, wrong length or "
          "disconnected)." + (f" First: {result['invalid_clips'][0]}" if result["invalid_clips"] else ""),
          "", "![metrics](metrics.png)", "", "## Per-action accuracy", "",
          "| action | prompts | real | generated |", "|---|---|---|---|"]
    for a, v in result["per_action"].items():
        f = lambda x: "–" if x is None or not np.isfinite(x) else f"{x:.2f}"  # noqa: E731
        L.append(f"| {a} | {v['n_prompts']} | {f(v['real'])} | {f(v['generated'])} |")
    L += ["", "![per-action accuracy](per_action.png)", ""]
    if grid:
        L += ["## Generated clips per action (each above its real test clip)", "", "![grid](grid.png)", ""]
    rob = result.get("robustness")
    if rob:
        L += ["## Robustness (prompt suites)", "",
              f"All expected outcomes: **{rob['all_expected_outcomes']}** ({rob['n_failures']} failures). "
              + (f"Robustness gap (baseline − adversarial physics-valid rate): {rob['robustness_gap']:.3f}."
                 if rob.get("robustness_gap") is not None else ""), "",
              "| suite | prompts | expected outcome | physics valid | foot skate | jitter | frozen | action acc. |",
              "|---|---|---|---|---|---|---|---|"]
        g = lambda v, k: "–" if v.get(k) is None or not np.isfinite(v[k]) else f"{v[k]:.3f}"  # noqa: E731
        for name, v in rob["suites"].items():
            L.append(f"| {name} | {v['n']} | {v['expected_outcome_rate']:.2f} | {g(v, 'physics_valid_rate')} | "
                     f"{g(v, 'foot_skate_ratio')} | {g(v, 'jitter')} | {g(v, 'static_ratio')} | {g(v, 'action_accuracy')} |")
        fails = [(n, f) for n, v in rob["suites"].items() for f in v["failures"]]
        if fails:
            L += ["", "Failures:", ""] + [f"- {n}/{f['id']} (seed {f['seed']}): {f['outcome']}: {f['reason']}"
                                          for n, f in fails[:30]]
        L.append("")
    L += ["## Timings (s)", "", ", ".join(f"{k} {v}" for k, v in result["timings_s"].items()),
          f"(load average {result['machine'].get('load_avg')})", ""]
    path = out / "eval.md"
    path.write_text("\n".join(L))
    return path
