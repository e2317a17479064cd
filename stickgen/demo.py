"""The main job end to end on the embedded default (an in-process local Ray), on data the project
generates itself:

    synthesize labelled clips (BVH) -> preprocess (Ray Data) -> pretrain (Ray Train, tiny)
    -> SFT (init from the pretrain) -> generate GIFs -> serve (Ray Serve, one HTTP request)

Every step calls the same library functions as the CLI commands and the cluster jobs; this module
only strings them together. `stickgen demo --out DIR` runs it.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ("a person waves", "a person walks forward", "someone jumps", "a person bows")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _step(log: list, name: str, t0: float, **info) -> None:
    log.append({"step": name, "seconds": round(time.perf_counter() - t0, 1), **info})
    print(f"[demo] {name} done in {log[-1]['seconds']} s " + " ".join(f"{k}={v}" for k, v in info.items()), flush=True)


def run_demo(out: str | Path, *, clips_per_action: int = 4, pretrain_steps: int = 300, sft_steps: int = 100,
             serve: bool = True, num_cpus: int | None = None) -> dict:
    import ray

    from .data.pipeline import load_config, run_preprocess
    from .generate.sample import MotionGenerator
    from .local_ray import init_local_ray
    from .motion.synth import synthesize_dataset
    from .train.config import load_train_config
    from .train.recipe import apply_overrides, run_training

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    paths = synthesize_dataset(out / "clips", n_per_action=clips_per_action, seed=0)
    _step(log, "synthesize", t0, clips=len(paths))

    if not ray.is_initialized():
        init_local_ray(num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    t0 = time.perf_counter()
    summary = run_preprocess([str(out / "clips")], out / "data", load_config(REPO / "configs" / "preprocess.yaml"),
                             verbose=False)
    _step(log, "preprocess", t0, pretrain=summary["windows"]["pretrain"], sft=summary["windows"]["sft"],
          rejected=summary["windows"]["rejected"])

    t0 = time.perf_counter()
    cfg = apply_overrides(load_train_config(REPO / "configs" / "pretrain_tiny.yaml"), data=str(out / "data"),
                          storage_path=str(out / "runs"), max_steps=pretrain_steps)
    pre = run_training(cfg)
    _step(log, "pretrain", t0, best=pre["best"], val_loss=round(pre["metrics"]["val_loss"], 4))

    t0 = time.perf_counter()
    cfg = apply_overrides(load_train_config(REPO / "configs" / "sft_tiny.yaml"), data=str(out / "data"),
                          storage_path=str(out / "runs"), init_from=pre["best"], max_steps=sft_steps)
    sft = run_training(cfg)
    _step(log, "sft", t0, best=sft["best"], val_loss=round(sft["metrics"]["val_loss"], 4))

    t0 = time.perf_counter()
    gen = MotionGenerator(sft["best"])
    anims = gen.generate(list(PROMPTS), seconds=6.0, seeds=list(range(len(PROMPTS))))
    files = [str(a.save(out / f"{a.prompt.split()[-1] if a.prompt.split()[-1] != 'forward' else 'walk'}.gif"))
             for a in anims]
    anims[0].save(out / "waves.motion.json")
    _step(log, "generate", t0, files=len(files))

    served = None
    if serve:
        t0 = time.perf_counter()
        served = _serve_once(sft["best"], out / "served.gif")
        _step(log, "serve", t0, file=str(served))

    result = {"out": str(out), "seconds": round(time.perf_counter() - t_all, 1), "steps": log,
              "pretrain": pre["best"], "sft": sft["best"], "gifs": files, "served": str(served) if served else None}
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    return result


def _serve_once(checkpoint: str, path: Path) -> Path:
    """Start the Serve app on a free port, generate one GIF over HTTP, shut Serve down."""
    from ray import serve

    from .serve.app import build_graph
    from .serve.client import generate

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = build_graph({"models": {"demo": checkpoint}, "device": "cpu", "cpus_per_replica": 0.5},
                          options={"Renderer": {"ray_actor_options": {"num_cpus": 0.25}},
                                   "Generator": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}})
        serve.run(app, name="stickgen", route_prefix="/", logging_config={"enable_access_log": False})
        data, _headers = generate(f"http://127.0.0.1:{port}", "a person waves", fmt="gif", seconds=4.0, seed=0)
        path.write_bytes(data)
    finally:
        serve.shutdown()
    return path
