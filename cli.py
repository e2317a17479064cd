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
