"""English descriptions for clips that only have labels, and real sentences where they exist.

Sources like Bandai Namco give only (content, style) labels; the model needs sentences. Each
(action, style) gets several phrasings so the text encoder sees varied wording for the same motion
("a person walks sadly", "someone trudges forward, downcast", ...). The choice among phrasings is
a pure function of the clip id, so reruns are identical.
"""

from __future__ import annotations

import csv
import functools
import hashlib
from pathlib import Path

from .actions import ACTION_ID, ACTIONS, BANDAI_CONTENT, VERBS, action_from_text

# Style -> (subjects, adverbial phrases). Subjects and adverbs are combined with the action's verb.
STYLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "normal": (("a person", "someone", "a man", "a woman"), ("", "normally", "in a relaxed way")),
    "happy": (("a happy person", "a cheerful man", "someone"), ("happily", "cheerfully", "with a bounce")),
    "sad": (("a sad person", "someone", "a downcast man"), ("sadly", "slowly, head down", "dejectedly")),
    "angry": (("an angry person", "someone", "a furious man"), ("angrily", "aggressively", "with stiff, sharp moves")),
    "proud": (("a proud person", "someone", "a confident man"), ("proudly", "with the chest out", "confidently")),
    "not-confident": (("a shy person", "someone", "an insecure man"), ("timidly", "hesitantly", "nervously")),
    "masculinity": (("a man", "a macho man", "someone"), ("in a masculine way", "with broad, heavy moves", "forcefully")),
    "feminine": (("a woman", "a graceful woman", "someone"), ("gracefully", "in a feminine way", "elegantly")),
    "childish": (("a child", "a kid", "someone"), ("playfully", "like a child", "childishly")),
    "old": (("an old man", "an elderly person", "an old woman"), ("slowly", "stiffly", "carefully")),
    "tired": (("a tired person", "an exhausted man", "someone"), ("wearily", "sluggishly", "with tired, dragging moves")),
    "active": (("an energetic person", "a lively man", "someone"), ("energetically", "briskly", "with lots of energy")),
    "musical": (("a performer", "someone", "a dancer"), ("rhythmically", "like in a musical", "theatrically")),
    "giant": (("a giant", "a huge man", "someone"), ("with heavy, giant strides", "ponderously", "heavily")),
    "chimpira": (("a thug", "a punk", "someone"), ("with a swagger", "like a street thug", "menacingly")),
}

# Extra, hand-written phrasings for common (action, style) pairs that templates can't produce.
SPECIAL: dict[tuple[str, str], tuple[str, ...]] = {
    ("walk", "sad"): ("someone trudges forward, downcast", "a sad person walks with slumped shoulders"),
    ("walk", "tired"): ("an exhausted person drags their feet forward",),
    ("walk", "old"): ("an old man shuffles forward", "an elderly person walks slowly with short steps"),
    ("wave", "normal"): ("a person waves hello", "someone waves goodbye"),
    ("wave", "old"): ("an old man waves with both hands",),
    ("bow", "normal"): ("a person bows politely", "someone bends forward in a bow"),
    ("run", "happy"): ("someone jogs along cheerfully",),
}


def _pick(key: str, n: int) -> int:
    """Deterministic choice in [0, n) from a string (not Python's salted hash)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % n


def describe(action: str, style: str = "normal", n: int = 6) -> list[str]:
    """Up to `n` distinct phrasings for an action performed in a style, most canonical first."""
    if action not in ACTION_ID:
        raise KeyError(f"unknown action {action!r}")
    subjects, adverbs = STYLES.get(style, STYLES["normal"])
    verb, gerund = VERBS[action]
    out: list[str] = list(SPECIAL.get((action, style), ()))
    for i in range(max(len(subjects), len(adverbs))):
        subj, adv = subjects[i % len(subjects)], adverbs[i % len(adverbs)]
        out.append(f"{subj} {verb} {adv}".strip() if adv else f"{subj} {verb}")
    out.append(f"{subjects[0]} is {gerund}" + (f", {adverbs[0]}" if adverbs[0] else ""))
    seen: list[str] = []
    for s in out:
        s = " ".join(s.split())
        if s not in seen:
            seen.append(s)
    return seen[:n]


def describe_clip(clip_id: str, action: str, style: str = "normal") -> tuple[str, list[str]]:
    """(primary description, all descriptions) for a labelled clip; the primary one rotates
    deterministically with the clip id so the dataset covers every phrasing."""
    all_desc = describe(action, style)
    return all_desc[_pick(clip_id, len(all_desc))], all_desc


def bandai_labels(stem: str) -> tuple[str, str] | None:
    """'dataset-1_walk-back_not-confident_001' -> ('walk_backward', 'not-confident')."""
    parts = stem.split("_")
    if len(parts) < 4 or not parts[0].startswith("dataset"):
        return None
    content, style = parts[1], parts[2]
    action = BANDAI_CONTENT.get(content)
    return (action, style) if action else None


# --- CMU: real sentences (KIT-ML) and the database's own trial descriptions -------------------

def _texts_dir() -> Path | None:
    import os

    env = os.environ.get("STICKGEN_TEXT_DIR")
    cands = [Path(env)] if env else []
    here = Path(__file__).resolve()
    cands += [p / "shared" / "data" / "text" for p in here.parents]
    for c in cands:
        if (c / "kitml_cmu_texts.csv").exists() or (c / "cmu_trial_descriptions.csv").exists():
            return c
    return None


@functools.lru_cache(maxsize=4)
def cmu_texts(text_dir: str | None = None) -> dict[str, dict]:
    """cmu_id ('01_01') -> {'sentences': [...KIT-ML...], 'trial': 'CMU description' or ''}.

    Reads `kitml_cmu_texts.csv` and `cmu_trial_descriptions.csv` from `text_dir`
    (default: $STICKGEN_TEXT_DIR or the project's ../shared/data/text). Missing files -> {}."""
    d = Path(text_dir) if text_dir else _texts_dir()
    out: dict[str, dict] = {}
    if d is None:
        return out
    kit = d / "kitml_cmu_texts.csv"
    if kit.exists():
        with open(kit, newline="") as f:
            for row in csv.DictReader(f):
                e = out.setdefault(row["cmu_id"], {"sentences": [], "trial": row.get("cmu_index_description", "")})
                if row["text"] and row["text"] not in e["sentences"]:
                    e["sentences"].append(row["text"].strip())
    trials = d / "cmu_trial_descriptions.csv"
    if trials.exists():
        with open(trials, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    cid = f"{int(row['Subject']):02d}_{int(row['Trial #']):02d}"
                except (KeyError, ValueError):
                    continue
                e = out.setdefault(cid, {"sentences": [], "trial": ""})
                e["trial"] = (row.get("Motion Description") or e["trial"] or "").strip()
    return out


def cmu_description(cmu_id: str, text_dir: str | None = None) -> tuple[str, list[str], str] | None:
    """(primary sentence, all sentences, action name) for a CMU clip, or None if unknown.

    Prefers real KIT-ML sentences; falls back to a sentence built from the CMU trial description.
    The action comes from the sentences' keywords (the trial description first, it names the
    whole take), else idle."""
    e = cmu_texts(text_dir).get(cmu_id)
    if not e:
        return None
    sentences = list(e["sentences"])
    trial = e["trial"]
    aid = action_from_text(trial)
    if aid is None:
        for s in sentences:
            aid = action_from_text(s)
            if aid is not None:
                break
    action = ACTIONS[aid] if aid is not None else "idle"
    if not sentences:  # no real sentence: a templated one first, the CMU trial note as a variant
        sentences = describe(action)[:3] + ([f"a person, {trial.lower()}"] if trial else [])
        return sentences[0], sentences, action
    return sentences[_pick(cmu_id, len(sentences))], sentences, action
