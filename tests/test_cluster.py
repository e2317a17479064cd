"""cluster/ and docs/ agree with the code (issue #9).

Pure and fast: these tests parse files, import modules, run the job entrypoints' argument parsing
and config loading with the work itself replaced, and build the Serve graph offline. They never
start Ray, Serve or a container.

What is checked:
- every YAML under cluster/ parses; cluster/ray-cluster.yaml passes Ray's own cluster-launcher
  schema; cluster/serve.yaml and the RayService's serveConfigV2 pass Ray Serve's schema and are
  the same config (one source of truth);
- the Serve import path resolves, and the deployments named in the config are the deployments of
  the application it builds; the app args parse with the app's own parser;
- the job entrypoints of the RayJobs run through `python -m jobs.<kind>` exactly as on the
  cluster (Ray and the work itself replaced): the modules import, the arguments parse, the config
  files exist and load through the project's loaders, SFT starts from the pretrain job's output;
- resource shapes: GPU groups carry nvidia.com/gpu and are what training and serving target,
  preprocessing runs on CPU-only groups, the Serve Generator's max replicas fit the GPU groups;
- KubeRay manifests: apiVersion ray.io/v1, kinds, rayStartParams, head/worker group specs,
  token auth, one image, the shared volume on every pod;
- the Dockerfile and the cluster launcher install from constraints.txt; Ray versions agree;
- docs/: the CLI commands and options they show exist, the module and file names they cite exist,
  data-formats.md lists every Parquet column, checkpoint file and `.motion` key, sizing.md's
  placeholders are all in its measured-figures table.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
DOCS = REPO / "docs"

STORAGE = "/mnt/cluster_storage"            # the shared volume's mount point on every node/pod
STICKGEN_ROOT = STORAGE + "/stickgen/"      # where stickgen keeps data, runs and checkpoints
IMAGE_PROJECT_DIR = "/opt/stickgen"         # the project inside cluster/Dockerfile's image
VM_PROJECT_DIR = "/home/ray/stickgen"       # the project on ray-cluster.yaml's nodes
STORAGE_CLAIM = "stickgen-storage"
TOKEN_SECRET = "stickgen-ray-token"

MANIFESTS = {
    "raycluster.yaml": "RayCluster",
    "rayjob-preprocess.yaml": "RayJob",
    "rayjob-pretrain.yaml": "RayJob",
    "rayjob-sft.yaml": "RayJob",
    "rayservice.yaml": "RayService",
}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _pin(name: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip().lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"constraints.txt pins no {name}")


def _ray_version() -> str:
    import ray

    return ray.__version__


def _under_storage(path: str) -> bool:
    return str(path).startswith(STICKGEN_ROOT) and ".." not in Path(path).parts


# ---------------------------------------------------------------------------------------- parsing


def test_cluster_files_exist():
    for rel in ["ray-cluster.yaml", "serve.yaml", "Dockerfile", "kuberay/storage.yaml",
                *(f"kuberay/{m}" for m in MANIFESTS)]:
        assert (CLUSTER / rel).is_file(), f"cluster/{rel} is missing"


@pytest.mark.parametrize("path", sorted(CLUSTER.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CLUSTER)))
def test_every_yaml_parses(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(isinstance(d, dict) and d for d in docs), f"{path}: empty or not a mapping"


# ---------------------------------------------------------------------------------------- versions


def test_ray_versions_agree():
    ver = _ray_version()
    assert _pin("ray") == ver, "constraints.txt's ray pin differs from the installed Ray"
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.findall(r"rayproject/ray:(\d+\.\d+\.\d+)-", dockerfile) == [ver]
    launcher = json.dumps(_load(CLUSTER / "ray-cluster.yaml"))
    tags = re.findall(r"rayproject/ray:(\d+\.\d+\.\d+)-", launcher)
    assert tags and set(tags) == {ver}, f"ray-cluster.yaml images {tags} != Ray {ver}"
    for name in MANIFESTS:
        spec = _cluster_spec(_load(KUBERAY / name))
        assert spec["rayVersion"] == ver, f"{name}: rayVersion {spec['rayVersion']} != Ray {ver}"


# -------------------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (CLUSTER / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_builds_on_ray_and_installs_from_lock_file():
    ins = _dockerfile_instructions()
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    froms = [a for op, a in ins if op == "FROM"]
    assert froms == ["${RAY_IMAGE}"], froms
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)-(gpu|cu\d+)", args["RAY_IMAGE"])
    assert m, f"base image {args['RAY_IMAGE']!r} is not a CUDA rayproject/ray image"
    import tomllib

    from packaging.specifiers import SpecifierSet

    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"3.{m.group(2)}" in SpecifierSet(requires), f"image Python 3.{m.group(2)} outside requires-python {requires}"

    workdirs = [a for op, a in ins if op == "WORKDIR"]
    assert workdirs == [IMAGE_PROJECT_DIR]
    copied = " ".join(a for op, a in ins if op == "COPY")
    # everything the package build needs (pyproject: packages stickgen*, jobs*; py-module cli; readme)
    for needed in ("constraints.txt", "pyproject.toml", "README.md", "cli.py", "stickgen", "jobs", "configs"):
        assert re.search(rf"(^|\s){re.escape(needed)}(\s|$)", copied), f"Dockerfile does not COPY {needed}"
    runs = [a for op, a in ins if op == "RUN"]
    project = [r for r in runs if re.search(r"pip install .*-c constraints\.txt .*-e \.", r)]
    assert project, "no `pip install -c constraints.txt -e .` in the Dockerfile"
    torch = [r for r in runs if "download.pytorch.org/whl/" in r]
    assert torch and "-c constraints.txt" in torch[0] and "s/^torch==//p" in torch[0]
    assert args.get("TORCH_VARIANT", "").startswith("cu"), "the image's torch must be a CUDA build"
    assert runs.index(torch[0]) < runs.index(project[0]), "torch (CUDA) must be installed before the project"
    # the sed expression the Dockerfile and ray-cluster.yaml use finds exactly the lock file's pin
    hits = [ln[len("torch=="):] for ln in (REPO / "constraints.txt").read_text().splitlines() if ln.startswith("torch==")]
    assert hits == [_pin("torch")]


def test_dockerignore_keeps_what_the_build_copies():
    ignore = [ln.strip() for ln in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    for needed in ("constraints.txt", "pyproject.toml", "README.md", "cli.py", "stickgen", "jobs", "configs", "cluster"):
        assert needed not in ignore, f"Dockerfile.dockerignore drops {needed}, which the build copies"
    for big in (".git", ".venv", "data", "runs"):
        assert big in ignore, f"Dockerfile.dockerignore should drop {big}"


# ---------------------------------------------------------------------------------------- Serve


@pytest.fixture(scope="module")
def serve_cfg() -> dict:
    from stickgen.serve.deploy import load_config

    return load_config(CLUSTER / "serve.yaml")  # the project's loader: Ray Serve's schema check included


def test_rayservice_embeds_serve_yaml(serve_cfg):
    from ray.serve.schema import ServeDeploySchema

    rs = _load(KUBERAY / "rayservice.yaml")
    v2 = yaml.safe_load(rs["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(v2)
    assert v2 == _load(CLUSTER / "serve.yaml"), (
        "rayservice.yaml's serveConfigV2 differs from cluster/serve.yaml: copy cluster/serve.yaml "
        "(from `proxy_location:` on) into serveConfigV2")
    assert [a["name"] for a in v2["applications"]] == [a["name"] for a in serve_cfg["applications"]]


def test_serve_import_path_and_deployment_names(serve_cfg):
    from ray.serve._private.build_app import build_app

    from stickgen.serve.app import BatchingConfig, parse_args

    for app in serve_cfg["applications"]:
        module, _, attr = app["import_path"].partition(":")
        builder = getattr(importlib.import_module(module), attr)
        args = parse_args(app.get("args"))  # the app's own parser: unknown keys are errors
        built = build_app(builder(app.get("args")), name=app["name"])  # offline: binds, starts nothing
        in_app = {d.name for d in built.deployments}
        in_config = {d["name"] for d in app.get("deployments", [])}
        assert in_config == in_app, f"{app['name']}: config names {sorted(in_config)}, app has {sorted(in_app)}"
        assert built.ingress_deployment_name == "Api"
        for d in app["deployments"]:
            if "user_config" in d:
                BatchingConfig(**d["user_config"])
        for mid, uri in args.models.items():
            assert uri.startswith("hf://") or _under_storage(uri), (
                f"model {mid}: {uri} is neither an hf:// URI nor on the shared storage ({STICKGEN_ROOT})")


def test_serve_fits_the_gpu_groups(serve_cfg):
    """Generator replicas take a GPU each (args.device cuda, or auto with GPUs present): the GPU
    groups that serve must fit Generator max_replicas, and each GPU pod one replica's shape."""
    from stickgen.serve.app import RENDERER_OPTIONS, generator_placement, parse_args

    app = serve_cfg["applications"][0]
    a = parse_args({**app["args"], "device": "cuda"})
    actor, device, _ = generator_placement(a)
    assert device == "cuda" and actor["num_gpus"] > 0
    deps = {d["name"]: d for d in app["deployments"]}
    max_gen = deps["Generator"]["autoscaling_config"]["max_replicas"]
    renderer_cpus = deps["Renderer"].get("ray_actor_options", RENDERER_OPTIONS["ray_actor_options"])["num_cpus"]

    shapes = []  # (where, pod GPUs, pod CPUs, max pods)
    for name in ("raycluster.yaml", "rayservice.yaml"):
        for g in _cluster_spec(_load(KUBERAY / name))["workerGroupSpecs"]:
            if _group_gpus(g):
                shapes.append((name, _group_gpus(g), _group_cpus(g), g["maxReplicas"]))
    nt = _load(CLUSTER / "ray-cluster.yaml")["available_node_types"]
    shapes += [("ray-cluster.yaml", t["resources"]["GPU"], t["resources"]["CPU"], t["max_workers"])
               for t in nt.values() if t["resources"].get("GPU")]
    assert {s[0] for s in shapes} == {"raycluster.yaml", "rayservice.yaml", "ray-cluster.yaml"}
    for where, gpus, cpus, max_pods in shapes:
        assert gpus >= actor["num_gpus"] and cpus >= actor["num_cpus"] + renderer_cpus, where
        per_pod = int(gpus // actor["num_gpus"])
        assert per_pod * max_pods >= max_gen, f"{where}: GPU capacity < Generator max_replicas {max_gen}"


# ---------------------------------------------------------------------------------------- KubeRay


def _cluster_spec(doc: dict) -> dict:
    return {"RayCluster": lambda s: s, "RayJob": lambda s: s["rayClusterSpec"],
            "RayService": lambda s: s["rayClusterConfig"]}[doc["kind"]](doc["spec"])


def _pods(spec: dict) -> list[tuple[str, dict]]:
    out = [("head", spec["headGroupSpec"]["template"]["spec"])]
    out += [(g["groupName"], g["template"]["spec"]) for g in spec.get("workerGroupSpecs", [])]
    return out


def _quantity(v) -> float:
    s = str(v)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def _limits(pod: dict) -> dict:
    return pod["containers"][0].get("resources", {}).get("limits", {})


def _group_gpus(group: dict) -> int:
    return int(_limits(group["template"]["spec"]).get("nvidia.com/gpu", 0))


def _group_cpus(group: dict) -> float:
    return _quantity(_limits(group["template"]["spec"])["cpu"])


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_kuberay_manifest_fields(name):
    doc = _load(KUBERAY / name)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == MANIFESTS[name]
    assert doc["metadata"]["name"].startswith("stickgen")
    spec = _cluster_spec(doc)
    assert spec["authOptions"] == {"mode": "token", "secretName": TOKEN_SECRET}, "token auth via authOptions"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0", "the head runs drivers only"
    groups = spec["workerGroupSpecs"]
    assert groups, "no worker groups"
    assert len({g["groupName"] for g in groups}) == len(groups)
    for g in groups:
        for k in ("replicas", "minReplicas", "maxReplicas"):
            assert isinstance(g[k], int), f"{g['groupName']}.{k}"
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
        gpus = _group_gpus(g)
        assert (gpus > 0) == (g["groupName"] == "gpu"), f"{g['groupName']}: nvidia.com/gpu {gpus}"
        if gpus:
            requests = g["template"]["spec"]["containers"][0]["resources"].get("requests", {})
            assert int(requests.get("nvidia.com/gpu", gpus)) == gpus
    for params in [head["rayStartParams"]] + [g["rayStartParams"] for g in groups]:
        assert isinstance(params, dict)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), \
            f"rayStartParams values are strings: {params}"
    for where, pod in [("head", head["template"]["spec"])] + [(g["groupName"], g["template"]["spec"]) for g in groups]:
        c = pod["containers"][0]
        assert c["image"] and "resources" in c and _limits(pod).get("cpu") and _limits(pod).get("memory"), where
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])
                  if "persistentVolumeClaim" in v}
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        assert claims.get(mounts.get(STORAGE)) == STORAGE_CLAIM, f"{name}/{where}: shared storage not mounted at {STORAGE}"


def test_kuberay_one_image_and_unique_names():
    images, names = set(), []
    for name in MANIFESTS:
        doc = _load(KUBERAY / name)
        names.append(doc["metadata"]["name"])
        for _, pod in _pods(_cluster_spec(doc)):
            images |= {c["image"] for c in pod["containers"]}
    assert len(images) == 1, f"the manifests use several images: {sorted(images)}"
    assert len(set(names)) == len(names)


def test_storage_claim_is_shared():
    pvc = _load(KUBERAY / "storage.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["metadata"]["name"] == STORAGE_CLAIM
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "every node reads and writes it"


def test_raycluster_autoscales_cpu_and_gpu_groups():
    spec = _cluster_spec(_load(KUBERAY / "raycluster.yaml"))
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    assert all(g["maxReplicas"] > g["minReplicas"] for g in groups.values()), "autoscaling needs room"


def test_rayservice_zero_downtime_and_gpus():
    doc = _load(KUBERAY / "rayservice.yaml")
    assert doc["spec"]["upgradeStrategy"]["type"] == "NewCluster"
    spec = _cluster_spec(doc)
    assert spec["enableInTreeAutoscaling"] is True
    gpu = [g for g in spec["workerGroupSpecs"] if _group_gpus(g)]
    assert gpu and all(g["minReplicas"] >= 1 for g in gpu), "device auto needs a GPU pod at deploy time"


# ---------------------------------------------------------------------------------------- RayJobs


def _run_entrypoint(entrypoint: str, monkeypatch) -> tuple[str, dict]:
    """Run `python -m jobs.<kind> ARGS` as the cluster would, with Ray and the work replaced:
    the module, its argument parser and the project's config loaders run for real."""
    import ray

    import stickgen.data.pipeline as pipeline
    import stickgen.train.recipe as recipe

    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", "-m"], f"entrypoint {entrypoint!r} is not `python -m MODULE ...`"
    module, args = argv[2], argv[3:]
    assert importlib.util.find_spec(module) is not None, f"{module} does not import"
    local = []
    for a in args:  # image paths (and paths relative to the uploaded checkout) -> this checkout
        rel = a[len(IMAGE_PROJECT_DIR) + 1:] if a.startswith(IMAGE_PROJECT_DIR + "/") else \
            a if a.startswith("configs/") else None
        if rel is not None:
            p = REPO / rel
            assert p.exists(), f"{a}: no {p.relative_to(REPO)} in the project"
            a = str(p)
        local.append(a)
    got: dict = {}

    def fake_preprocess(sources, out, cfg):
        got.update(sources=list(sources), out=out, cfg=cfg)
        return {"windows": {"pretrain": 0, "sft": 0}}

    def fake_training(cfg, on_start=None):
        got.update(cfg=cfg)
        return {"run": "r", "run_dir": "d", "best": "b", "total_steps": 0, "effective_batch": 0}

    monkeypatch.setattr(ray, "init", lambda *a, **k: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(pipeline, "run_preprocess", fake_preprocess)
    monkeypatch.setattr(recipe, "run_training", fake_training)
    monkeypatch.setattr(sys, "argv", [module, *local])
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=False)
    except SystemExit as e:
        assert e.code in (0, None), f"{module} exited with {e.code}"
    assert got, f"{module} did not reach its work function"
    return module, got


def _rayjob(name: str) -> dict:
    doc = _load(KUBERAY / name)
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True, "a RayJob tears its cluster down"
    assert spec.get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode", "SidecarMode")
    assert "clusterSelector" not in spec and spec["rayClusterSpec"]
    return doc


def test_rayjob_preprocess_runs_on_cpu(monkeypatch):
    from stickgen.data.pipeline import PreprocessConfig
    from stickgen.data.sources import is_uri

    doc = _rayjob("rayjob-preprocess.yaml")
    module, got = _run_entrypoint(doc["spec"]["entrypoint"], monkeypatch)
    assert module == "jobs.preprocess"
    assert isinstance(got["cfg"], PreprocessConfig)
    assert all(is_uri(s) or _under_storage(s) for s in got["sources"]), got["sources"]
    assert _under_storage(got["out"]), "the output must be on the shared storage"
    groups = _cluster_spec(doc)["workerGroupSpecs"]
    assert groups and not any(_group_gpus(g) for g in groups), "preprocessing runs on CPU groups"
    assert sum(g["minReplicas"] * _group_cpus(g) for g in groups) >= 16, "preprocess sizes tasks from the CPUs at start"


def _training_job(name: str, monkeypatch):
    doc = _rayjob(name)
    module, got = _run_entrypoint(doc["spec"]["entrypoint"], monkeypatch)
    return doc, module, got["cfg"]


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_rayjob_training_runs_on_gpus(stage, monkeypatch):
    doc, module, cfg = _training_job(f"rayjob-{stage}.yaml", monkeypatch)
    assert module == f"jobs.{stage}" and cfg.stage == stage and cfg.data.subset == stage
    assert cfg.run.use_gpu, "training targets the GPU group (--gpu)"
    groups = _cluster_spec(doc)["workerGroupSpecs"]
    gpus_at_start = sum(g["minReplicas"] * _group_gpus(g) for g in groups)
    assert cfg.run.workers <= gpus_at_start, f"--workers {cfg.run.workers} > {gpus_at_start} GPUs"
    assert all(_group_cpus(g) >= cfg.run.cpus_per_worker + 1 for g in groups if _group_gpus(g)), \
        "a GPU pod must fit a Train worker plus Ray Data reads"
    assert _under_storage(cfg.data.path) and _under_storage(cfg.run.storage_path)
    assert cfg.run.name, "a named run: fixed checkpoint path, and a retried RayJob resumes it"
    assert doc["spec"].get("backoffLimit", 0) >= 1


def test_sft_starts_from_the_pretrain_jobs_checkpoint(monkeypatch):
    _, _, pre = _training_job("rayjob-pretrain.yaml", monkeypatch)
    _, _, sft = _training_job("rayjob-sft.yaml", monkeypatch)
    assert sft.init_from == f"{pre.run.storage_path}/{pre.run.name}/best"
    assert sft.data.path == pre.data.path


# ------------------------------------------------------------------------------ ray-cluster.yaml


@pytest.fixture(scope="module")
def launcher() -> dict:
    return _load(CLUSTER / "ray-cluster.yaml")


def test_ray_cluster_yaml_passes_ray_schema(launcher):
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)
    assert launcher["head_node_type"] in launcher["available_node_types"]


def test_ray_cluster_node_types(launcher):
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != launcher["head_node_type"]}
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU"), "head: drivers only"
    cpu = [k for k, v in workers.items() if not v["resources"].get("GPU")]
    gpu = [k for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1]
    assert cpu and gpu, "a CPU worker type (preprocess) and a GPU worker type (train/serve)"
    for k, v in workers.items():
        assert 0 <= v["min_workers"] <= v["max_workers"], k
        assert v["resources"]["CPU"] >= 1, k
    assert sum(v["max_workers"] for v in workers.values()) <= launcher["max_workers"]


def test_ray_cluster_installs_from_lock_file(launcher):
    assert launcher["file_mounts"][VM_PROJECT_DIR] == ".", "the checkout is synced to the project dir"
    install = f"pip install -q -c {VM_PROJECT_DIR}/constraints.txt -e {VM_PROJECT_DIR}"
    types = launcher["available_node_types"]
    for name, t in types.items():
        cmds = t.get("worker_setup_commands") if name != launcher["head_node_type"] else None
        cmds = cmds if cmds is not None else launcher["setup_commands"]
        variant = "cu" if t["resources"].get("GPU") else "cpu"
        torch = [c for c in cmds if "download.pytorch.org/whl/" in c]
        assert len(torch) == 1 and f"/whl/{variant}" in torch[0] and f"{VM_PROJECT_DIR}/constraints.txt" in torch[0], name
        assert install in cmds and cmds.index(torch[0]) < cmds.index(install), name
        image = (t.get("docker") or {}).get("worker_image") or launcher["docker"]["image"]
        assert image.endswith("-gpu") == bool(t["resources"].get("GPU")), f"{name}: image {image}"


def test_ray_cluster_storage_and_auth(launcher):
    mount = " ".join(launcher["initialization_commands"])
    assert "mount -t nfs4" in mount and mount.count(STORAGE) >= 2, "one NFS mount at the storage path"
    assert f"-v {STORAGE}:{STORAGE}" in launcher["docker"]["run_options"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in launcher[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    assert "/home/ray/.ray/auth_token" in launcher["file_mounts"], "every node gets the cluster token"


# ---------------------------------------------------------------------------------------- docs


DOC_FILES = ["architecture.md", "operations.md", "data-formats.md", "sizing.md"]


def _doc(name: str) -> str:
    return (DOCS / name).read_text()


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def test_docs_exist():
    for name in DOC_FILES:
        assert (DOCS / name).is_file() and len(_doc(name)) > 500, f"docs/{name}"
    arch = _doc("architecture.md")
    diagrams = [b for b in _code_blocks(arch) if "Ray Data" in b and "Ray Train" in b and "Ray Serve" in b]
    assert len(diagrams) == 1, "architecture.md has one diagram: Ray Data -> Ray Train -> Ray Serve"


def _cli_invocations() -> list[tuple[str, list[str]]]:
    """Every `stickgen ...` command line in the docs' code blocks, as tokens after `stickgen`."""
    out = []
    for name in DOC_FILES:
        for block in _code_blocks(_doc(name)):
            for line in block.replace("\\\n", " ").splitlines():
                for part in re.split(r"&&|;", line.split(" #")[0]):
                    part = part.strip().lstrip("$ ")
                    if not re.match(r"(?:[A-Z_]+=\S*\s+)*stickgen(\s|$)", part):
                        continue
                    toks = shlex.split(part)
                    while re.fullmatch(r"[A-Z_]+=.*", toks[0]):  # leading VAR=value
                        toks = toks[1:]
                    out.append((name, toks[1:]))
    return out


def test_docs_cli_commands_and_options_exist():
    import typer

    import cli

    root = typer.main.get_command(cli.app)
    calls = _cli_invocations()
    assert len(calls) >= 10, "the docs show the stickgen commands"
    for doc, toks in calls:
        cmd, i = root, 0
        while hasattr(cmd, "commands") and i < len(toks) and not toks[i].startswith("-"):  # a group
            assert toks[i] in cmd.commands, f"docs/{doc}: `stickgen {' '.join(toks)}`: no command {toks[i]!r}"
            cmd, i = cmd.commands[toks[i]], i + 1
        opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for t in toks[i:]:
            if t == "--":
                break
            if t.startswith("-") and not re.fullmatch(r"-\d.*", t):
                assert t.split("=")[0] in opts, f"docs/{doc}: `stickgen {' '.join(toks)}`: no option {t}"


def test_docs_submit_job_arguments_parse(monkeypatch):
    """`stickgen submit KIND -- ARGS` in the docs: ARGS parse with the job's own parser."""
    jobs = [toks for _, toks in _cli_invocations() if toks[:1] == ["submit"] and "--" in toks]
    assert jobs
    for toks in jobs:
        kind, args = toks[1], toks[toks.index("--") + 1:]
        module, got = _run_entrypoint(shlex.join(["python", "-m", f"jobs.{kind}", *args]), monkeypatch)
        if kind in ("pretrain", "sft"):
            assert got["cfg"].stage == kind


def test_docs_name_real_modules_and_files():
    text = "\n".join(_doc(n) for n in DOC_FILES)
    # dotted module paths, optionally ending in one CamelCase attribute (a class)
    modules = set(re.findall(r"\b((?:stickgen|jobs)(?:\.[a-z_][a-z_0-9]*)+(?:\.[A-Z]\w*)?)", text))
    modules -= {"stickgen.schema_version", "stickgen.text_encoder", "stickgen.embedding_dim",
                "stickgen.kind", "stickgen.shape"}  # Parquet / job / field metadata keys, not modules
    assert len(modules) >= 15
    for dotted in sorted(modules):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):  # module, or module + attribute
            mod = ".".join(parts[:cut])
            try:
                spec = importlib.util.find_spec(mod)
            except (ImportError, ValueError):  # a parent that is a module, not a package
                spec = None
            if spec is not None:
                obj = importlib.import_module(mod)
                for attr in parts[cut:]:
                    assert hasattr(obj, attr), f"docs name {dotted}: {mod} has no {attr}"
                    obj = getattr(obj, attr)
                break
        else:
            raise AssertionError(f"docs name {dotted}, which does not exist")
    paths = set(re.findall(r"`((?:cluster|configs|jobs|stickgen|benchmarks|tests)/[\w./-]+\.(?:py|yaml|md|txt)|cluster/Dockerfile)`", text))
    for p in sorted(paths):
        assert (REPO / p).exists(), f"docs cite {p}, which does not exist"


def test_data_formats_doc_matches_the_code():
    from stickgen.data.schema import GENERATED_FIELDS, window_schema
    from stickgen.model import checkpoint as ck
    from stickgen.render.motion_json import to_motion_json

    import numpy as np

    text = _doc("data-formats.md")
    for f in list(window_schema(384)) + list(GENERATED_FIELDS):
        assert f"`{f.name}`" in text, f"data-formats.md does not describe column {f.name}"
    for key in ("stickgen.schema_version", "stickgen.text_encoder", "stickgen.embedding_dim", "stickgen.shape"):
        assert key in text
    for fname in (ck.CONFIG_NAME, ck.WEIGHTS_NAME, ck.TRAIN_STATE_NAME):
        assert f"`{fname}`" in text
    for key in ck._CONFIG_KEYS:
        assert f"`{key}`" in text, f"data-formats.md does not describe config.json key {key}"
    doc = to_motion_json(np.zeros((3, 48), np.float32), physics=np.zeros((3, 6)), camera=np.zeros((3, 3)))
    keys = set(doc) | {f"meta.{k}" for k in doc["meta"]} | {f"skeleton.{k}" for k in doc["skeleton"]}
    for key in keys:
        assert f"`{key}`" in text, f"data-formats.md does not describe .motion key {key}"


def test_sizing_figures_are_all_filled_in_the_measured_table():
    text = _doc("sizing.md")
    assert "{{" not in text, "sizing.md: a measured figure is still a placeholder"
    table = text[text.index("## Measured single-node figures"):].split("\n## ")[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("|") and not ln.startswith("|---")][1:]
    assert len(rows) >= 10
    for r in rows:  # symbol | figure | measured with | value: every value is stated
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert len(cells) == 4 and cells[3], f"sizing.md row without a value: {r}"