"""Evaluation: the frozen evaluator and metrics.

    stickgen eval --checkpoint DIR|hf://... --data DIR [--suite NAME] [--repeats N] [--out DIR]
    stickgen eval train-evaluator --data DIR --out DIR
    stickgen eval table eval/tiny/eval.json eval/small/eval.json     (the README results table)
    stickgen eval readme --config configs/eval.yaml                   (evaluate all + table)

Modules: `data` (read windows of the dataset schema), `evaluator` (motion encoder + action
classifier + TMR-style text-motion pair, trained on the train split only, checkpoint format),
`metrics` (each metric defined with its reference), `suites` (robustness prompt suites, shared with
the Serve tests), `run` (the protocol: repetitions over seeds, mean ± 95% interval), `report`
(eval.md + plots, README table, model-card metrics).

Every number is computed with stickgen's own evaluator and is NOT comparable to HumanML3D results.
"""
