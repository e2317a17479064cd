"""`stickgen`: the command line. A thin Typer layer over the library; every command here calls
the same functions the Ray jobs in `jobs/` call.

    stickgen demo                        the whole product end to end on an embedded local Ray
    stickgen inspect FILE [--json]       what a mocap file contains and how it scores
    stickgen render-clip FILE -o x.gif   watch a mocap clip as a stick figure
    stickgen synth DIR                   write seeded procedural clips as BVH
    ...                                  (see `stickgen --help`)

`--cluster` takes an optional value: `--cluster` alone means "the cluster named by
RAY_API_SERVER_ADDRESS or RAY_ADDRESS"; `--cluster http://head:8265` names one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="stickgen: text to 10-second stick-figure animation, trained and served on Ray.")

CLUSTER_AUTO = "auto"  # what a bare `--cluster` becomes (see main())


def _fail(msg: str, code: int = 1):
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


# --- motion core -----------------------------------------------------------------------------

@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder (clips, data, runs, GIFs)")] = Path("demo-out"),
    clips_per_action: Annotated[int, typer.Option(help="Synthesized clips per action")] = 4,
    pretrain_steps: Annotated[int, typer.Option(help="Tiny pretraining optimizer steps")] = 300,
    sft_steps: Annotated[int, typer.Option(help="Tiny SFT optimizer steps")] = 100,
    serve: Annotated[bool, typer.Option(help="Finish by serving the model and calling it over HTTP")] = True,
):
    """The main job end to end on an in-process Ray: synthesize -> preprocess -> pretrain -> SFT ->
    generate -> serve. Everything lands in --out."""
    from stickgen.demo import run_demo

    r = run_demo(out, clips_per_action=clips_per_action, pretrain_steps=pretrain_steps, sft_steps=sft_steps,
                 serve=serve)
    typer.echo(f"\ndemo finished in {r['seconds']} s; outputs in {r['out']}")
    for s in r["steps"]:
        typer.echo(f"  {s['step']:<11} {s['seconds']:>7.1f} s")
    typer.echo("  animations: " + ", ".join(r["gifs"] + ([r["served"]] if r["served"] else [])))
    typer.echo(f"  try: stickgen generate \"an old man waves with both hands\" --checkpoint {r['sft']} -o wave.gif")




@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="A mocap file: .bvh, .amc, .npy (HumanML3D), .npz (AMASS), .skeleton (NTU)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
    view: Annotated[str, typer.Option(help="Camera: auto | side | front")] = "auto",
):
    """Frames, fps, rig, joint mapping and the quality report of a mocap file."""
    from stickgen.errors import StickgenError
    from stickgen.motion.convert import ConvertConfig, clip_to_windows
    from stickgen.motion.readers import read_clip
    from stickgen.motion.skeleton import JOINTS

    try:
        clip = read_clip(str(file))
        rows, info = clip_to_windows(clip, str(file), ConvertConfig(view=view))
    except StickgenError as e:
        _fail(str(e))
    report = {
        "file": str(file), "source": clip.source, "frames": clip.n_frames, "fps": clip.fps,
        "duration_s": round(clip.duration, 3), "rig_joints": len(clip.joint_names),
        "units": clip.meta.get("units"), "mapping": {j: [clip.joint_names[i] for i in clip.mapping[j]] for j in JOINTS if j in clip.mapping},
        "action": info["action"], "description": rows[0]["description"], "view": info["view"],
        "split": info["split"],
        "windows": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                     if k in ("window_start", "n_frames", "quality", "physics_valid", "max_root_speed",
                              "max_root_accel", "limb_error", "jitter", "static_ratio", "explosion_ratio",
                              "repetition", "foot_skate", "foot_skate_ratio")} for r in rows],
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{file}: {clip.source}, {clip.n_frames} frames @ {clip.fps:g} fps ({clip.duration:.2f} s), "
               f"{len(clip.joint_names)} rig joints, units {report['units']}")
    typer.echo(f"  action {report['action']!r}: {report['description']!r}; view {info['view']['view']} "
               f"({info['view']['angle_deg']:+.0f} deg from facing); split {info['split']}")
    typer.echo("  mapping: " + ", ".join(f"{k}<-{'+'.join(v)}" for k, v in report["mapping"].items()))
    for w in report["windows"]:
        typer.echo(f"  window @{w['window_start']}: {w['n_frames']} frames, quality {w['quality']:.3f}, "
                   f"physics_valid {w['physics_valid']}, speed {w['max_root_speed']:.2f} u/s, "
                   f"limb err {w['limb_error']:.3f}, jitter {w['jitter']:.1f}, skate {w['foot_skate_ratio']:.2f}")


@app.command("render-clip")
def render_clip(
    file: Annotated[Path, typer.Argument(help="A mocap file")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output .gif, .mp4, .svg or .png")] = Path("clip.gif"),
    view: Annotated[str, typer.Option(help="Camera: auto | side | front")] = "auto",
    seconds: Annotated[Optional[float], typer.Option(help="Render at most this many seconds")] = None,
):
    """Render a mocap clip as an animated stick figure, to check the conversion by eye."""
    import numpy as np

    from stickgen.errors import StickgenError
    from stickgen.motion.convert import ConvertConfig, clip_to_windows
    from stickgen.motion.readers import read_clip
    from stickgen.render import render

    try:
        clip = read_clip(str(file))
        n = int(round(clip.duration * 25)) + 1
        rows, info = clip_to_windows(clip, str(file), ConvertConfig(view=view, window=max(n, 2), stride=max(n, 2)))
    except StickgenError as e:
        _fail(str(e))
    r = rows[0]
    motion = r["motion"][r["mask"]]
    if seconds:
        motion = motion[: int(seconds * 25)]
    path = render(np.asarray(motion), out, title=r["description"])
    typer.echo(f"wrote {path} ({len(motion)} frames, view {info['view']['view']})")


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder for the BVH clips")],
    n_per_action: Annotated[int, typer.Option(help="Clips per action")] = 4,
    seed: Annotated[int, typer.Option(help="Seed")] = 0,
):
    """Write seeded procedural clips (walk, run, jump, wave, bow, ...) as BVH with JSON labels."""
    from stickgen.motion.synth import synthesize_dataset

    paths = synthesize_dataset(out, n_per_action=n_per_action, seed=seed)
    typer.echo(f"wrote {len(paths)} clips to {out}")


# --- later stages add their commands below (one block per stage, in data-flow order) -------

# --- preprocessing (Ray Data) and the Ray Jobs client -----------------------------------------


def _abs_if_local(p: str) -> str:
    """Paths typed relative to the user's cwd mean the same on a cluster sharing the filesystem."""
    from stickgen.data.sources import is_uri

    return p if is_uri(p) else str(Path(p).expanduser().resolve())


@app.command()
def preprocess(
    sources: Annotated[list[str], typer.Argument(help="Folders, globs, .txt file lists, files or URIs (s3://, gs://)")],
    out: Annotated[str, typer.Option("--out", help="Output folder: pretrain/, sft/, manifest.parquet, summary.*")],
    config: Annotated[Optional[Path], typer.Option(help="Config YAML (default configs/preprocess.yaml)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override KEY=VALUE, e.g. curation.sft.action_cap=200")] = None,
    cluster: Annotated[Optional[str], typer.Option(help="Submit to a Ray cluster's Jobs API (bare: RAY_API_SERVER_ADDRESS / RAY_ADDRESS)")] = None,
    follow: Annotated[bool, typer.Option(help="With --cluster: stream the job's logs until it ends")] = True,
    num_cpus: Annotated[Optional[int], typer.Option(help="Local run: CPUs for the in-process Ray (default: all)")] = None,
):
    """Raw mocap -> curated, embedded Parquet (pretrain + SFT) with a manifest of every input."""
    from stickgen.errors import StickgenError

    if cluster is not None:
        args = [_abs_if_local(s) for s in sources] + ["--out", _abs_if_local(out)]
        if config is not None:
            cfg_path = config.resolve()
            from stickgen.submit import PROJECT_ROOT

            inside = cfg_path.is_relative_to(PROJECT_ROOT)
            args += ["--config", str(cfg_path.relative_to(PROJECT_ROOT)) if inside else str(cfg_path)]
        for s in set_ or []:
            args += ["--set", s]
        _submit_and_report("preprocess", args, cluster, follow)
        return
    from stickgen.data.pipeline import load_config, parse_overrides, run_preprocess
    from stickgen.local_ray import init_local_ray

    try:
        cfg = load_config(config, parse_overrides(set_ or []))
        init_local_ray(num_cpus)
        run_preprocess(sources, out, cfg)
    except StickgenError as e:
        _fail(str(e))


def _submit_and_report(kind: str, args: list[str], cluster: Optional[str], follow: bool,
                       pip: Optional[list[str]] = None) -> None:
    from stickgen import submit as sub

    try:
        job = sub.submit(kind, args, None if cluster == CLUSTER_AUTO else cluster, pip=pip)
    except sub.SubmitError as e:
        _fail(str(e))
    verb = "attached to running job" if job.attached else "submitted"
    typer.echo(f"{verb} {job.submission_id} on {job.address}")
    typer.echo(f"  logs:   stickgen jobs logs {job.submission_id} --cluster {job.address}")
    typer.echo(f"  stop:   stickgen jobs stop {job.submission_id} --cluster {job.address}")
    if follow:
        status = sub.follow(job.submission_id, job.address)
        typer.echo(f"job {job.submission_id}: {status}")
        if status != "SUCCEEDED":
            raise typer.Exit(1)


# --- training (Ray Train) -------------------------------------------------------------------


def _follow_progress(log_dir: Path, total: int, stop) -> None:
    """Rich progress bar fed by the run's metrics.jsonl (rank 0 writes it every log step)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    f = log_dir / "metrics.jsonl"
    seen = 0
    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  transient=False) as bar:
        task = bar.add_task("train", total=total, info="")
        while not stop.wait(1.0):
            if not f.exists():
                continue
            lines = f.read_text().splitlines()
            for line in lines[seen:]:
                rec = json.loads(line)
                info = f"loss {rec['loss']:.4f} lr {rec['lr']:.1e}" if "loss" in rec else \
                    (f"val {rec['val_loss']:.4f}" if "val_loss" in rec else "")
                bar.update(task, completed=rec.get("step", 0), info=info)
            seen = len(lines)


@app.command()
def train(
    stage: Annotated[str, typer.Argument(help="pretrain | sft")],
    config: Annotated[Path, typer.Option(help="Training config YAML, e.g. configs/sft_medium.yaml")],
    init_from: Annotated[Optional[str], typer.Option(help="Initial weights (checkpoint dir, published .bin/.pth, hf://)")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Run name to resume (weights, optimizer, schedule, data position)")] = None,
    data: Annotated[Optional[str], typer.Option(help="Preprocessed dataset folder (overrides data.path)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Data-parallel workers (overrides run.workers)")] = None,
    gpu: Annotated[Optional[bool], typer.Option("--gpu/--cpu", help="Train on GPUs (nccl + bf16) or CPUs (gloo)")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Run storage (overrides run.storage_path)")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps")] = None,
    num_cpus: Annotated[Optional[int], typer.Option(help="CPUs for the embedded Ray (default: all)")] = None,
):
    """Pretrain or fine-tune (SFT) on the embedded local Ray; the best checkpoint lands in RUN/best."""
    import threading

    import ray

    from stickgen.errors import StickgenError
    from stickgen.local_ray import init_local_ray
    from stickgen.train.config import load_train_config
    from stickgen.train.recipe import apply_overrides, run_training

    try:
        cfg = apply_overrides(load_train_config(config), stage=stage, init_from=init_from, data=data, workers=workers,
                              gpu=gpu, name=resume, storage_path=storage, max_steps=max_steps)
    except StickgenError as e:
        _fail(str(e))
    init_local_ray(num_cpus, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    stop = threading.Event()

    def on_start(run_dir: Path, total: int) -> None:
        threading.Thread(target=_follow_progress, args=(run_dir / "logs", total, stop), daemon=True).start()

    try:
        summary = run_training(cfg, on_start=on_start)
    except StickgenError as e:
        _fail(str(e))
    finally:
        stop.set()
    typer.echo(f"run {summary['run']}: best checkpoint {summary['best']} "
               f"(val_loss {summary['metrics'].get('val_loss', float('nan')):.4f}); logs in {summary['run_dir']}/logs")


@app.command()
def push(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder (config.json + model.safetensors)")],
    repo: Annotated[str, typer.Option(help="Hub repo id, owner/name")],
    metrics: Annotated[Optional[Path], typer.Option(help="eval.json from `stickgen eval` (measured metrics for the card)")] = None,
    revision: Annotated[Optional[str], typer.Option(help="Branch to push to")] = None,
    private: Annotated[bool, typer.Option(help="Create the repo private")] = False,
):
    """Upload a checkpoint to the Hugging Face Hub with a generated model card."""
    from stickgen.errors import StickgenError
    from stickgen.model.hub import push_checkpoint

    measured = None
    if metrics is not None:
        from stickgen.eval.report import load_metrics_for_card

        measured = load_metrics_for_card(metrics)
    try:
        files = push_checkpoint(checkpoint, repo, revision=revision, private=private, metrics=measured)
    except StickgenError as e:
        _fail(str(e))
    typer.echo(f"pushed {', '.join(files)} to https://huggingface.co/{repo}")


# --- generation --------------------------------------------------------------------------------


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help='What to animate, e.g. "an old man waves with both hands"')],
    checkpoint: Annotated[str, typer.Option(help="Checkpoint folder or hf://owner/repo[@rev]")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output: .gif, .mp4, .svg (animated), .png (sheet) or .json (.motion)")] = Path("out.gif"),
    seconds: Annotated[float, typer.Option(help="Length, up to 10 s")] = 10.0,
    seed: Annotated[int, typer.Option(help="Random seed (same prompt + seed + checkpoint = same motion)")] = 0,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: the checkpoint's)")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Classifier-free guidance scale (default: the checkpoint's)")] = None,
    actions: Annotated[Optional[str], typer.Option(help='Action timeline, e.g. "walk:0-4,wave:4-10"')] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
):
    """Generate one animation from text and write it (rendering the generated motion)."""
    from stickgen.errors import StickgenError
    from stickgen.generate.sample import MotionGenerator

    try:
        gen = MotionGenerator(checkpoint, device=device)
        anim = gen.generate([prompt], seconds=seconds, seeds=[seed], steps=steps, guidance=guidance,
                            actions=[actions])[0]
        path = anim.save(out)
    except StickgenError as e:
        _fail(str(e))
    typer.echo(f"wrote {path}: {len(anim.motion)} frames, {anim.steps} steps, guidance {anim.guidance:g}, "
               f"seed {seed}, checkpoint {anim.checkpoint_id}")


@app.command()
def submit(
    kind: Annotated[str, typer.Argument(help="Job kind: preprocess | pretrain | sft | generate (runs python -m jobs.KIND)")],
    job_args: Annotated[Optional[list[str]], typer.Argument(help="Arguments for the job, after --")] = None,
    cluster: Annotated[Optional[str], typer.Option(help="Jobs API address (bare: RAY_API_SERVER_ADDRESS / RAY_ADDRESS)")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Stream the job's logs until it ends")] = False,
    pip: Annotated[Optional[list[str]], typer.Option("--pip", help="Extra pip requirement for the job's runtime_env (repeatable)")] = None,
):
    """Submit a stickgen job to a Ray cluster: stickgen submit KIND --cluster ADDR [--follow] -- ARGS."""
    from stickgen.submit import JOB_KINDS

    if kind not in JOB_KINDS:
        _fail(f"unknown job kind {kind!r}; choose one of {', '.join(JOB_KINDS)}")
    _submit_and_report(kind, list(job_args or []), cluster, follow, pip)


jobs_app = typer.Typer(help="List, inspect, follow and stop stickgen jobs on a Ray cluster.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
_ClusterOpt = Annotated[Optional[str], typer.Option("--cluster", help="Jobs API address (bare: RAY_API_SERVER_ADDRESS / RAY_ADDRESS)")]


def _addr(cluster: Optional[str]) -> Optional[str]:
    return None if cluster == CLUSTER_AUTO else cluster


@jobs_app.command("list")
def jobs_list(cluster: _ClusterOpt = None):
    """Every job on the cluster, oldest first."""
    from stickgen import submit as sub

    try:
        for j in sub.list_jobs(_addr(cluster)):
            typer.echo(f"{j['submission_id'] or '-':<40} {j['status']:<10} {j['entrypoint']}")
    except sub.SubmitError as e:
        _fail(str(e))


@jobs_app.command("status")
def jobs_status(job_id: Annotated[str, typer.Argument(help="Submission id")], cluster: _ClusterOpt = None):
    """A job's status, entrypoint and message."""
    from stickgen import submit as sub

    try:
        d = sub.info(job_id, _addr(cluster))
    except Exception as e:  # noqa: BLE001 - unknown ids come back as HTTP errors
        _fail(f"job {job_id}: {e}")
    typer.echo(json.dumps(d, indent=2, default=str))


@jobs_app.command("logs")
def jobs_logs(job_id: Annotated[str, typer.Argument(help="Submission id")], cluster: _ClusterOpt = None,
              follow: Annotated[bool, typer.Option("--follow", help="Stream until the job ends")] = False):
    """A job's logs (driver output: progress, the summary table)."""
    from stickgen import submit as sub

    try:
        if follow:
            status = sub.follow(job_id, _addr(cluster))
            typer.echo(f"job {job_id}: {status}")
        else:
            typer.echo(sub.logs(job_id, _addr(cluster)), nl=False)
    except sub.SubmitError as e:
        _fail(str(e))


@jobs_app.command("stop")
def jobs_stop(job_id: Annotated[str, typer.Argument(help="Submission id")], cluster: _ClusterOpt = None):
    """Stop a running job and wait (up to 30 s) until it has stopped."""
    from stickgen import submit as sub

    try:
        status = sub.stop(job_id, _addr(cluster))
    except sub.SubmitError as e:
        _fail(str(e))
    typer.echo(f"job {job_id}: {status}")
    if status not in ("STOPPED", "FAILED", "SUCCEEDED"):
        raise typer.Exit(1)


# --- bulk generation (Ray Data) --------------------------------------------------------------

@app.command("generate-bulk")
def generate_bulk(
    prompts: Annotated[str, typer.Argument(help="Prompts: .txt (one per line), .jsonl or .parquet (prompt, seed, seconds, actions)")],
    checkpoint: Annotated[str, typer.Option(help="Checkpoint folder or hf://owner/repo[@rev]")],
    out: Annotated[str, typer.Option("--out", help="Output folder: data/*.parquet, renders/, prompts.jsonl, summary.json (re-run to resume)")],
    samples_per_prompt: Annotated[int, typer.Option("--samples-per-prompt", "-k", help="Samples per prompt")] = 1,
    seconds: Annotated[float, typer.Option(help="Clip length for lines that give none (0.4-10)")] = 10.0,
    steps: Annotated[Optional[int], typer.Option(help="Sampler steps (default: the checkpoint's)")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Guidance scale (default: the checkpoint's)")] = None,
    render: Annotated[str, typer.Option(help="Also render each clip: none | gif | mp4 | svg")] = "none",
    max_retries: Annotated[int, typer.Option(help="Regenerations (new seed) of a clip failing the quality gate")] = 2,
    min_quality: Annotated[float, typer.Option(help="Quality gate: combined quality floor")] = 0.5,
    physics_gate: Annotated[bool, typer.Option("--physics-gate/--no-physics-gate", help="Quality gate: require physics_valid")] = True,
    batch_size: Annotated[Optional[int], typer.Option(help="Clips per sampler call (default 1024 per GPU actor, 32 on CPU)")] = None,
    actors: Annotated[Optional[int], typer.Option(help="Sampler actors (default: from the cluster's resources)")] = None,
    cluster: Annotated[Optional[str], typer.Option(help="Submit to a Ray cluster's Jobs API (bare: RAY_API_SERVER_ADDRESS / RAY_ADDRESS)")] = None,
    follow: Annotated[bool, typer.Option(help="With --cluster: stream the job's logs until it ends")] = True,
    num_cpus: Annotated[Optional[int], typer.Option(help="Local run: CPUs for the in-process Ray (default: all)")] = None,
):
    """Prompt list -> quality-checked animation dataset (Parquet in the training schema), resumable."""
    from stickgen.errors import StickgenError

    args = ["--samples-per-prompt", str(samples_per_prompt), "--seconds", str(seconds), "--render", render,
            "--max-retries", str(max_retries), "--min-quality", str(min_quality)]
    for flag, v in (("--steps", steps), ("--guidance", guidance), ("--batch-size", batch_size), ("--actors", actors)):
        if v is not None:
            args += [flag, str(v)]
    if not physics_gate:
        args.append("--no-physics-gate")
    if cluster is not None:
        _submit_and_report("generate", [_abs_if_local(prompts), "--checkpoint", _abs_if_local(checkpoint),
                                        "--out", _abs_if_local(out), *args], cluster, follow)
        return
    from jobs.generate import config_from_args, parse_args
    from stickgen.generate.bulk import run_bulk
    from stickgen.local_ray import init_local_ray

    try:
        cfg = config_from_args(parse_args([prompts, "--checkpoint", checkpoint, "--out", out, *args]))
        init_local_ray(num_cpus)
        run_bulk(cfg)
    except StickgenError as e:
        _fail(str(e))


# --- evaluation (stickgen.eval) ----------------------------------------------------------------

eval_app = typer.Typer(help="Evaluate a checkpoint on held-out real data with stickgen's own frozen evaluator "
                            "(numbers not comparable to HumanML3D). `stickgen eval --checkpoint DIR --data DIR`.")
app.add_typer(eval_app, name="eval")


@eval_app.callback(invoke_without_command=True)
def eval_main(
    ctx: typer.Context,
    checkpoint: Annotated[Optional[str], typer.Option(help="Checkpoint folder, hf://owner/repo[@rev], or baseline:constant-pose")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Dataset folder written by `stickgen preprocess`")] = None,
    evaluator: Annotated[Optional[Path], typer.Option(help="Evaluator checkpoint (default DATA/evaluator, trained on first use)")] = None,
    suite: Annotated[Optional[list[str]], typer.Option(help="Prompt suite(s) for robustness (repeatable; default all)")] = None,
    no_suites: Annotated[bool, typer.Option("--no-suites", help="Skip the robustness suites")] = False,
    repeats: Annotated[int, typer.Option(help="Repetitions with different seeds (the field's protocol: 20)")] = 5,
    max_prompts: Annotated[int, typer.Option(help="At most this many test prompts (0 = all)")] = 32,
    seed: Annotated[int, typer.Option(help="Base seed")] = 0,
    steps: Annotated[Optional[int], typer.Option(help="Sampler steps (default: the checkpoint's)")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Guidance (default: the checkpoint's)")] = None,
    subset: Annotated[str, typer.Option(help="Window set of the dataset: pretrain or sft")] = "pretrain",
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default eval/<checkpoint name>)")] = None,
):
    """Write OUT/eval.json and OUT/eval.md (+ metrics.png, per_action.png, grid.png)."""
    if ctx.invoked_subcommand is not None:
        return
    if not checkpoint or not data:
        _fail("stickgen eval needs --checkpoint and --data (or a subcommand: train-evaluator, table, readme)")
    from stickgen.errors import StickgenError
    from stickgen.eval.run import EvalSettings, run_eval
    from stickgen.eval.suites import get_suites

    try:
        suites = () if no_suites else (tuple(s.name for s in get_suites(suite)) if suite else None)
    except KeyError as e:
        _fail(str(e.args[0]))
    settings = EvalSettings(repeats=repeats, max_prompts=max_prompts or None, seed=seed, steps=steps,
                            guidance=guidance, suites=suites, subset=subset)
    name = checkpoint.rstrip("/").split("/")[-1].replace(":", "-") or "checkpoint"
    out = out or Path("eval") / name
    try:
        res = run_eval(checkpoint, data, out, evaluator=evaluator, settings=settings, log=typer.echo)
    except (StickgenError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    g = res["generated"]
    show = lambda k: f"{g[k]['mean']:.3f} ± {g[k]['ci95']:.3f}" if g.get(k) and g[k]["n"] > 1 else (  # noqa: E731
        f"{g[k]['mean']:.3f}" if g.get(k) else "–")
    typer.echo(f"R@1 {show('r_precision_top1')}, R@3 {show('r_precision_top3')}, FID {show('fid')} "
               f"(real floor {res['real']['fid']['mean']:.3f}), MM-Dist {show('mm_dist')}, diversity {show('diversity')}, "
               f"action acc {show('action_accuracy')}, physics valid {show('physics_valid_rate')}")
    if res.get("robustness"):
        r = res["robustness"]
        typer.echo(f"robustness: {r['n_failures']} failures; all expected outcomes: {r['all_expected_outcomes']}")
    typer.echo(f"wrote {out / 'eval.json'} and {out / 'eval.md'} in {res['timings_s']['total']:.0f} s "
               "(stickgen evaluator: not comparable to HumanML3D numbers)")


@eval_app.command("train-evaluator")
def eval_train_evaluator(
    data: Annotated[Path, typer.Option(help="Dataset folder written by `stickgen preprocess`")],
    out: Annotated[Path, typer.Option(help="Evaluator checkpoint folder to write")],
    steps: Annotated[int, typer.Option(help="Training steps")] = 500,
    seed: Annotated[int, typer.Option(help="Seed")] = 0,
    subset: Annotated[str, typer.Option(help="Window set: pretrain or sft")] = "pretrain",
):
    """Train the frozen evaluator on the dataset's train split (never val/test) and save it."""
    from stickgen.errors import StickgenError
    from stickgen.eval.evaluator import TrainRecipe, train_evaluator

    try:
        train_evaluator(data, out, subset=subset, recipe=TrainRecipe(steps=steps, seed=seed), log=typer.echo)
    except (StickgenError, ValueError) as e:
        _fail(str(e))


@eval_app.command("table")
def eval_table(
    evals: Annotated[list[Path], typer.Argument(help="eval.json files (or their folders); the first gives the real-motion row")],
    out: Annotated[Optional[Path], typer.Option(help="Write the Markdown table here (default: print)")] = None,
):
    """The README results table (real motion vs checkpoints, mean ± 95% interval) from eval.json files."""
    from stickgen.errors import StickgenError
    from stickgen.eval.report import results_table

    try:
        table = results_table(evals)
    except (StickgenError, ValueError, KeyError) as e:
        _fail(str(e))
    if out:
        out.write_text(table)
        typer.echo(f"wrote {out}")
    else:
        typer.echo(table)


@eval_app.command("readme")
def eval_readme(
    config: Annotated[Path, typer.Option(help="configs/eval.yaml: data, evaluator, settings and checkpoints")] = Path("configs/eval.yaml"),
):
    """Evaluate every checkpoint listed in the config and write the README results table."""
    from stickgen.errors import StickgenError
    from stickgen.eval.run import run_readme

    try:
        path = run_readme(config, log=typer.echo)
    except (StickgenError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(f"wrote {path}")


# --- serving (Ray Serve) and its HTTP client -------------------------------------------------

serve_app = typer.Typer(help="Serve generation over HTTP on Ray Serve (batched, autoscaled, multiplexed).",
                        no_args_is_help=True)
app.add_typer(serve_app, name="serve")
client_app = typer.Typer(help="Call a running stickgen API.", no_args_is_help=True)
app.add_typer(client_app, name="client")
_CheckpointOpt = Annotated[Optional[list[str]], typer.Option(
    "--checkpoint", help="Checkpoint folder or hf:// URI; repeat as ID=URI to serve several (multiplexed)")]


@serve_app.command("run")
def serve_run(
    checkpoint: _CheckpointOpt = None,
    port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
    host: Annotated[str, typer.Option(help="HTTP host (0.0.0.0 to listen on every interface)")] = "127.0.0.1",
    default_model: Annotated[Optional[str], typer.Option(help="Model id used when a request names none")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    num_cpus: Annotated[Optional[int], typer.Option(help="CPUs for the in-process Ray (default: all)")] = None,
    fast: Annotated[bool, typer.Option(help="Serve's high-throughput data path (HAProxy, gRPC; see cluster/serve.yaml). "
                                            "Replica HTTP ports then listen on all interfaces")] = False,
):
    """Serve locally in the foreground on an in-process Ray until Ctrl-C (page at /, API docs at /docs)."""
    import os
    import signal

    if fast:  # read by Ray's processes when they start, i.e. at init_local_ray below
        os.environ.update(RAY_SERVE_ENABLE_HA_PROXY="1", RAY_SERVE_THROUGHPUT_OPTIMIZED="1")
    import ray
    from ray import serve

    from stickgen.errors import StickgenError
    from stickgen.local_ray import init_local_ray
    from stickgen.serve.app import GENERATOR_OPTIONS, build_graph, parse_models

    try:
        args = {"models": parse_models(",".join(checkpoint or [])) if checkpoint else None, "device": device}
        if default_model:
            args["default_model"] = default_model
        init_local_ray(num_cpus)
        cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
        # serve.yaml's settings, shrunk to one machine: the Renderer shares a core and the
        # Generator scales out over the cores left over.
        scaling = {**GENERATOR_OPTIONS["autoscaling_config"], "max_replicas": max(1, cpus - 1)}
        local = {"Renderer": {"ray_actor_options": {"num_cpus": 0.5 if cpus >= 2 else 0.25}},
                 "Generator": {"autoscaling_config": scaling}}
        if cpus < 2:
            args["cpus_per_replica"] = 0.5
        application = build_graph({k: v for k, v in args.items() if v is not None}, options=local)
        # `docker stop` / Kubernetes send SIGTERM: shut Serve and the in-process Ray down as on Ctrl-C
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        serve.start(http_options={"host": host, "port": port})
        typer.echo(f"stickgen API on http://{host}:{port}/  (API docs: /docs; Ctrl-C stops)")
        # the Api logs one line per request (request id, model, status, batch size), as in serve.yaml
        serve.run(application, name="stickgen", route_prefix="/", blocking=True,
                  logging_config={"enable_access_log": False})
    except StickgenError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        pass
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


@serve_app.command("deploy")
def serve_deploy(
    cluster: Annotated[Optional[str], typer.Option(help="Dashboard address (bare: RAY_API_SERVER_ADDRESS / RAY_ADDRESS)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Serve config (default cluster/serve.yaml)")] = None,
    checkpoint: _CheckpointOpt = None,
    token: Annotated[Optional[str], typer.Option(help="Cluster token (default RAY_AUTH_TOKEN or ~/.ray/auth_token)")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the application is RUNNING")] = True,
):
    """Deploy cluster/serve.yaml to a running Ray cluster (what `serve deploy` does, checked first)."""
    from stickgen.errors import StickgenError
    from stickgen.serve.app import parse_models
    from stickgen.serve.deploy import APP_NAME, DEFAULT_CONFIG, deploy, load_config, resolve_address, resolve_token

    try:
        cfg = load_config(config or DEFAULT_CONFIG, models=parse_models(",".join(checkpoint)) if checkpoint else None)
        address, tok = resolve_address(cluster), resolve_token(token)
        deploy(cfg, address, tok)
        typer.echo(f"sent {config or DEFAULT_CONFIG} to {address}")
        if wait:
            from stickgen.serve.deploy import wait_running

            wait_running(address, APP_NAME, tok)
            typer.echo(f"application {APP_NAME!r} is RUNNING (check: serve status -a {address})")
    except StickgenError as e:
        _fail(str(e))
    except Exception as e:  # noqa: BLE001 - the SDK raises auth, connection and HTTP errors of many types
        _fail(f"{type(e).__name__}: {e}")


@client_app.command("generate")
def client_generate(
    prompt: Annotated[str, typer.Argument(help="What the figure does")],
    url: Annotated[str, typer.Option(help="The API's base URL")] = "http://127.0.0.1:8000",
    out: Annotated[Path, typer.Option("-o", "--out", help="Output .gif, .mp4, .svg or .json (.motion)")] = Path("animation.gif"),
    seconds: Annotated[Optional[float], typer.Option(help="Clip length, 0.4 to 10 s")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed (default: the server picks one and reports it)")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model id (see GET /v1/models)")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Sampler steps")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Text guidance")] = None,
    actions: Annotated[Optional[str], typer.Option(help='Action timeline, e.g. "walk:0-4,wave:4-10"')] = None,
    token: Annotated[Optional[str], typer.Option(help="Bearer token (default STICKGEN_API_TOKEN)")] = None,
):
    """Ask a running stickgen API for one animation and save it; the format follows -o's suffix."""
    from stickgen.errors import StickgenError
    from stickgen.serve.client import format_for, generate

    try:
        data, headers = generate(url, prompt, fmt=format_for(str(out)), seconds=seconds, seed=seed, model=model,
                                 steps=steps, guidance=guidance, actions=actions, token=token)
    except StickgenError as e:
        _fail(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    typer.echo(f"wrote {out} ({len(data)} bytes): model {headers.get('x-model')}, seed {headers.get('x-seed')}, "
               f"batch of {headers.get('x-batch-size')}, request {headers.get('x-request-id')}")


def main():
    """Console entry point: lets `--cluster` be given without a value."""
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a == "--cluster" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            argv.insert(i + 1, CLUSTER_AUTO)
            break
    app(args=argv, prog_name="stickgen")


if __name__ == "__main__":
    main()
