"""The fixed action vocabulary (the model has 64 action slots) and the maps from source labels and
free text to action ids.

Ids are part of the checkpoint contract (`config.json` stores the vocabulary by name), so names are
only ever appended, never reordered. Id 0 is `idle`. Slots after the last name are reserved.
"""

from __future__ import annotations

import re

import numpy as np

NUM_ACTION_SLOTS = 64

ACTIONS: tuple[str, ...] = (
    "idle", "walk", "run", "sprint", "jump", "wave", "bow", "kick",
    "punch", "sit", "stand_up", "turn", "dance", "clap", "point", "walk_backward",
    "sidestep", "beckon", "guide", "respond", "slash", "climb", "crawl", "fall",
    "lie_down", "kneel", "squat", "stretch", "throw", "catch", "swim", "hop",
    "skip", "balance", "look_around", "gesture", "drink", "eat", "push", "pull",
    "lift", "carry", "swing", "fight_stance", "dodge", "celebrate", "hug", "shrug",
    "stumble", "spin", "march", "tiptoe", "limp", "cartwheel", "salute", "jumping_jacks",
    "walk_left", "walk_right",
)
assert len(ACTIONS) <= NUM_ACTION_SLOTS
ACTION_ID = {name: i for i, name in enumerate(ACTIONS)}
IDLE = 0
#: The last slot means "no action given": the denoiser is trained with actions dropped to it, so
#: generation works with or without an action timeline.
NULL_ACTION = NUM_ACTION_SLOTS - 1

# How to say each action in a sentence: (present-tense verb phrase, gerund).
VERBS: dict[str, tuple[str, str]] = {
    "idle": ("stands still", "standing still"), "walk": ("walks forward", "walking"),
    "run": ("runs", "running"), "sprint": ("sprints", "sprinting"), "jump": ("jumps", "jumping"),
    "wave": ("waves", "waving"), "bow": ("bows", "bowing"), "kick": ("kicks", "kicking"),
    "punch": ("throws a punch", "punching"), "sit": ("sits down", "sitting down"),
    "stand_up": ("stands up", "standing up"), "turn": ("turns around", "turning around"),
    "dance": ("dances", "dancing"), "clap": ("claps", "clapping"), "point": ("points", "pointing"),
    "walk_backward": ("walks backwards", "walking backwards"),
    "sidestep": ("steps sideways", "stepping sideways"),
    "beckon": ("beckons someone over", "beckoning"), "guide": ("gestures the way", "guiding"),
    "respond": ("responds with a gesture", "responding"), "slash": ("slashes with a sword", "slashing"),
    "climb": ("climbs", "climbing"), "crawl": ("crawls", "crawling"), "fall": ("falls down", "falling"),
    "lie_down": ("lies down", "lying down"), "kneel": ("kneels", "kneeling"), "squat": ("squats", "squatting"),
    "stretch": ("stretches", "stretching"), "throw": ("throws something", "throwing"),
    "catch": ("catches something", "catching"), "swim": ("swims", "swimming"), "hop": ("hops", "hopping"),
    "skip": ("skips", "skipping"), "balance": ("balances", "balancing"),
    "look_around": ("looks around", "looking around"), "gesture": ("gestures while talking", "gesturing"),
    "drink": ("drinks", "drinking"), "eat": ("eats", "eating"), "push": ("pushes", "pushing"),
    "pull": ("pulls", "pulling"), "lift": ("lifts something", "lifting"), "carry": ("carries something", "carrying"),
    "swing": ("swings", "swinging"), "fight_stance": ("takes a fighting stance", "in a fighting stance"),
    "dodge": ("dodges", "dodging"), "celebrate": ("celebrates", "celebrating"), "hug": ("hugs", "hugging"),
    "shrug": ("shrugs", "shrugging"), "stumble": ("stumbles", "stumbling"), "spin": ("spins", "spinning"),
    "march": ("marches", "marching"), "tiptoe": ("tiptoes", "tiptoeing"), "limp": ("limps", "limping"),
    "cartwheel": ("does a cartwheel", "doing a cartwheel"), "salute": ("salutes", "saluting"),
    "jumping_jacks": ("does jumping jacks", "doing jumping jacks"),
    "walk_left": ("walks diagonally to the left", "walking diagonally to the left"),
    "walk_right": ("walks diagonally to the right", "walking diagonally to the right"),
}
assert set(VERBS) == set(ACTIONS)

#: Bandai Namco content labels -> action.
BANDAI_CONTENT = {
    "walk": "walk", "run": "run", "dash": "sprint", "walk-back": "walk_backward",
    # checked on the data: Bandai walk-left/right walk forward-diagonally (20-55 deg off the facing)
    "walk-left": "walk_left", "walk-right": "walk_right", "bow": "bow", "bye": "wave", "byebye": "wave",
    "guide": "guide", "respond": "respond", "call": "beckon", "punch": "punch", "kick": "kick",
    "slash": "slash", "dance-long": "dance", "dance-short": "dance",
}

# Free-text keywords, most specific first. Word-boundary regexes over lower-cased text.
_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("jumping_jacks", r"jumping[- ]jacks?|star jumps?"),
    ("walk_backward", r"(walk|step|move)\w*\s+(backward|backwards|back)\b|\bbackwards?\b"),
    ("sidestep", r"side[- ]?step\w*|(step|shuffl)\w*\s+(sideways|to the (left|right)|left|right)\b|\bsideways\b"),
    ("walk_left", r"(walk|mov)\w*\s+(diagonally\s+)?(to the |towards the )?left\b"),
    ("walk_right", r"(walk|mov)\w*\s+(diagonally\s+)?(to the |towards the )?right\b"),
    ("cartwheel", r"cartwheel\w*"),
    ("jump", r"jump\w*|leap\w*"),
    ("hop", r"hop\w*"),
    ("skip", r"skip\w*"),
    ("sprint", r"sprint\w*|dash\w*"),
    ("run", r"run\w*|jog\w*|ran\b"),
    ("march", r"march\w*"),
    ("tiptoe", r"tip[- ]?toe\w*|sneak\w*"),
    ("limp", r"limp\w*"),
    ("stumble", r"stumbl\w*|trip\w*|stagger\w*"),
    ("walk", r"walk\w*|stroll\w*|trudg\w*|stride\w*|pac(e|es|ing)\b|step\w* forward"),
    ("wave", r"wav(e|es|ing|ed)\b|bye\b|goodbye|farewell"),
    ("bow", r"bow(s|ing|ed)?\b"),
    ("kick", r"kick\w*"),
    ("punch", r"punch\w*|box(es|ing)?\b|jab\w*|uppercut"),
    ("slash", r"slash\w*|sword|stab\w*"),
    ("stand_up", r"(stand|get|gets|getting|rise|rises)\s+up\b"),
    ("sit", r"\bsit\w*|sat\b|seated"),
    ("kneel", r"kneel\w*|knelt"),
    ("squat", r"squat\w*|crouch\w*"),
    ("lie_down", r"lie\w* down|lying|lays? down"),
    ("fall", r"fall\w*|fell\b|collaps\w*"),
    ("crawl", r"crawl\w*"),
    ("climb", r"climb\w*"),
    ("spin", r"spin\w*|twirl\w*|pirouette"),
    ("turn", r"turn\w*|rotat\w*"),
    ("dance", r"danc\w*|ballet|salsa|waltz|tango|disco"),
    ("clap", r"clap\w*|applau\w*"),
    ("point", r"point\w*"),
    ("beckon", r"beckon\w*|call\w* (someone|over)|come here"),
    ("guide", r"guid\w*|show\w* the way|direct\w*"),
    ("salute", r"salut\w*"),
    ("throw", r"throw\w*|toss\w*|pitch\w*|threw"),
    ("catch", r"catch\w*|caught"),
    ("swing", r"swing\w*|golf|bat\b"),
    ("swim", r"swim\w*|breaststroke|freestyle"),
    ("stretch", r"stretch\w*|yoga"),
    ("balance", r"balanc\w*"),
    ("look_around", r"look\w* around|search\w*"),
    ("drink", r"drink\w*|sip\w*"),
    ("eat", r"\beat\w*"),
    ("push", r"push\w*|shov\w*"),
    ("pull", r"pull\w*|drag\w*|tug\w*"),
    ("lift", r"lift\w*|pick\w* up|raise\w* (a|the) (box|object)"),
    ("carry", r"carr(y|ies|ying|ied)"),
    ("fight_stance", r"fight\w*|brawl\w*|martial|karate"),
    ("dodge", r"dodg\w*|duck\w*|evad\w*"),
    ("celebrate", r"celebrat\w*|cheer\w*|triumph"),
    ("hug", r"hug\w*|embrac\w*"),
    ("shrug", r"shrug\w*"),
    ("gesture", r"gestur\w*|talk\w*|speak\w*|explain\w*|convers\w*"),
    ("respond", r"respond\w*|nod\w*|answer\w*|acknowledg\w*"),
    ("idle", r"stand\w* still|idle|stand(s|ing)?\b|wait\w*|rest\w*"),
)
_KEYWORD_RE = tuple((ACTION_ID[a], re.compile(r"\b(?:" + p + r")")) for a, p in _KEYWORDS)


def action_id(name: str) -> int:
    try:
        return ACTION_ID[name]
    except KeyError:
        raise KeyError(f"unknown action {name!r}; known: {', '.join(ACTIONS)}") from None


def actions_in_text(text: str) -> list[int]:
    """Every action mentioned in `text`, in order of first mention (each once)."""
    t = (text or "").lower()
    found: list[tuple[int, int]] = []
    for aid, rx in _KEYWORD_RE:
        m = rx.search(t)
        if m is not None:
            found.append((m.start(), aid))
    found.sort()
    out: list[int] = []
    for _, aid in found:
        if aid not in out:
            out.append(aid)
    return out


def action_from_text(text: str) -> int | None:
    """The most specific action a sentence names (keyword priority order), or None."""
    t = (text or "").lower()
    for aid, rx in _KEYWORD_RE:
        if rx.search(t):
            return aid
    return None


def parse_timeline(spec: str, seconds: float, fps: int = 25) -> np.ndarray:
    """'walk:0-4,wave:4-10' -> int16 [round(seconds*fps)] per-frame action ids.

    Frames no entry covers are idle; a later entry overrides an earlier one where they overlap."""
    n = int(round(seconds * fps))
    out = np.zeros(n, np.int16)
    if not spec or not spec.strip():
        return out
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"([a-z_]+)\s*:\s*([0-9.]+)\s*-\s*([0-9.]+)", part)
        if m is None:
            raise ValueError(f"bad action timeline entry {part!r}; expected NAME:START-END, e.g. walk:0-4")
        name, a, b = m.group(1), float(m.group(2)), float(m.group(3))
        if name not in ACTION_ID:
            raise ValueError(f"unknown action {name!r} in timeline; known: {', '.join(ACTIONS)}")
        if b <= a:
            raise ValueError(f"timeline entry {part!r}: end must be after start")
        out[int(round(a * fps)):int(round(b * fps))] = ACTION_ID[name]
    return out
