"""SOURCE arguments -> a deterministic, sorted list of input files.

A SOURCE is one of:

- a local folder (searched recursively for motion files),
- a glob (`data/**/*.bvh`, `s3://bucket/mocap/*/*.amc`),
- a file list: a `.txt` file with one SOURCE per line (blank lines and `#` comments skipped;
  relative entries are relative to the list's folder),
- a single file (always an input, whatever its extension: an unsupported one is then rejected
  with a reason in the manifest instead of being silently skipped),
- any of the above as a pyarrow-filesystem URI (`s3://`, `gs://`, `hdfs://`, `file://`).

Folders and globs keep only files with a motion extension (`readers.SUPPORTED_EXTENSIONS`);
companions (`.asf` skeletons of `.amc` takes, `.json` label sidecars) are not inputs but travel
with their take when it is fetched from an object store (`local_copy`).

The list is sorted by path and de-duplicated, so the same SOURCE arguments always give the same
inputs in the same order; a SOURCE that matches nothing is an error naming it (a typo in a glob
must not quietly produce an empty dataset).
"""

from __future__ import annotations

import contextlib
import glob as globlib
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import MotionFormatError, StickgenError

#: used when `stickgen.motion.readers` cannot be imported (it owns the real list)
_FALLBACK_EXTENSIONS = (".bvh", ".amc", ".npy", ".npz", ".skeleton")
_GLOB_CHARS = set("*?[")


class SourceError(StickgenError, ValueError):
    """A SOURCE argument names nothing usable (missing path, empty glob, bad URI)."""

    reason = "source"


@dataclass(frozen=True, order=True)
class SourceFile:
    """One input: `path` is a local absolute path or a URI; `size` in bytes."""

    path: str
    size: int


def motion_extensions() -> tuple[str, ...]:
    try:
        from ..motion.readers import SUPPORTED_EXTENSIONS
    except ImportError:
        return _FALLBACK_EXTENSIONS
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in SUPPORTED_EXTENSIONS)


def is_uri(s: str) -> bool:
    """`scheme://...` other than a Windows drive letter."""
    head, sep, _ = s.partition("://")
    return bool(sep) and len(head) > 1 and head.replace("+", "").isalnum()


def _filesystem(uri: str):
    """(pyarrow FileSystem, path inside it) for a URI; a SourceError names the URI."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad URIs / missing creds
        raise SourceError(f"{uri}: cannot open filesystem ({type(e).__name__}: {e})") from None


def _uri_prefix(uri: str) -> str:
    """`s3://` for `s3://bucket/key`: prepended to listed paths to rebuild their URIs (nothing
    for `file://`, whose listed paths are plain local paths)."""
    scheme = uri.split("://", 1)[0]
    return "" if scheme == "file" else scheme + "://"


def _has_ext(path: str, exts: tuple[str, ...]) -> bool:
    return path.lower().endswith(exts)


def _expand_local(src: str, exts: tuple[str, ...], base: Path | None) -> list[SourceFile]:
    p = Path(src).expanduser()
    if base is not None and not p.is_absolute():
        p = base / p
    s = str(p)
    if any(c in _GLOB_CHARS for c in s):
        out = []
        for m in globlib.glob(s, recursive=True):
            mp = Path(m)
            if mp.is_dir():
                out += _walk_local(mp, exts)
            elif _has_ext(m, exts):
                out.append(SourceFile(_abs(mp), _size(mp)))
        return out
    if p.is_dir():
        return _walk_local(p, exts)
    if p.is_file():
        if p.suffix.lower() == ".txt":
            return _expand_list(p, exts)
        return [SourceFile(_abs(p), _size(p))]
    raise SourceError(f"{src}: no such file or folder")


def _abs(p: Path) -> str:
    """Absolute and normalised, but symlinks are kept: a linked take is its own input (its name
    is its clip id), not a duplicate of its target."""
    return os.path.abspath(p)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:  # a dangling symlink: still an input, rejected later with reason io
        return 0


def _walk_local(root: Path, exts: tuple[str, ...]) -> list[SourceFile]:
    """Every motion file under `root`, following folder symlinks (datasets are often linked in)
    but never into a folder already visited, so a link cycle cannot loop; hidden folders skipped."""
    out, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [SourceFile(_abs(Path(dirpath) / f), _size(Path(dirpath) / f)) for f in filenames if _has_ext(f, exts)]
    return out


def _expand_list(list_file: Path, exts: tuple[str, ...]) -> list[SourceFile]:
    return _expand_lines(str(list_file), list_file.read_text(), exts,
                         lambda e: e if is_uri(e) or Path(e).is_absolute() else str(list_file.parent / e))


def _expand_lines(where: str, text: str, exts: tuple[str, ...], resolve) -> list[SourceFile]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        try:
            out += _expand_one(resolve(entry), exts)
        except SourceError as e:
            raise SourceError(f"{where}:{n}: {e}") from None
    return out


def _expand_uri(src: str, exts: tuple[str, ...]) -> list[SourceFile]:
    import pyarrow.fs as pafs

    has_glob = any(c in _GLOB_CHARS for c in src)
    # list from the longest glob-free prefix, then match the pattern
    root_uri = src
    if has_glob:
        cut = min(i for i, c in enumerate(src) if c in _GLOB_CHARS)
        root_uri = src[: src.rfind("/", 0, cut)]
    fs, root = _filesystem(root_uri)
    prefix = _uri_prefix(src)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"{src}: not found")
    if info.type == pafs.FileType.File and not has_glob:
        if src.lower().endswith(".txt"):
            with fs.open_input_stream(root) as f:
                text = f.read().decode()
            here = posixpath.dirname(root)
            return _expand_lines(src, text, exts,
                                 lambda e: e if is_uri(e) else prefix + posixpath.join(here, e))
        return [SourceFile(prefix + root, int(info.size or 0))]
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = [i for i in infos if i.type == pafs.FileType.File]
    if has_glob:
        rx = _glob_regex(src.split("://", 1)[1])
        # a glob matching a folder selects the files under it
        files = [i for i in files if rx.fullmatch(i.path) or any(rx.fullmatch(d) for d in _parents(i.path, root))]
    return [SourceFile(prefix + i.path, int(i.size or 0)) for i in files if _has_ext(i.path, exts)]


def _glob_regex(pattern: str) -> re.Pattern:
    """Path-aware glob: `*` and `?` stay inside one path segment, `**` spans segments."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _parents(path: str, root: str) -> Iterator[str]:
    d = posixpath.dirname(path)
    while d and len(d) > len(root):
        yield d
        d = posixpath.dirname(d)


def _expand_one(src: str, exts: tuple[str, ...], base: Path | None = None) -> list[SourceFile]:
    found = _expand_uri(src, exts) if is_uri(src) else _expand_local(src, exts, base)
    if not found:
        raise SourceError(f"{src}: matches no motion files (looked for {', '.join(exts)})")
    return found


def expand_sources(sources: Sequence[str] | str, *, extensions: Sequence[str] | None = None) -> list[SourceFile]:
    """Every input file named by `sources`, sorted by path, each once. Raises SourceError."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise SourceError("no SOURCE given")
    exts = tuple(e.lower() for e in extensions) if extensions else motion_extensions()
    seen: dict[str, SourceFile] = {}
    for src in sources:
        for f in _expand_one(str(src), exts):
            seen.setdefault(f.path, f)
    return sorted(seen.values())


# ----------------------------------------------------------------------------- reading remote inputs


def _companions(fs, path: str) -> list[str]:
    """Files that must sit next to a take for its reader: a `.json` label sidecar with the same
    stem, and for `.amc` the `.asf` skeletons of its folder (small, text)."""
    import pyarrow.fs as pafs

    stem, ext = posixpath.splitext(path)
    wanted = [stem + ".json"]
    if ext.lower() == ".amc":
        sel = pafs.FileSelector(posixpath.dirname(path), recursive=False)
        wanted += [i.path for i in fs.get_file_info(sel) if i.path.lower().endswith(".asf")]
    infos = fs.get_file_info(wanted)
    return [i.path for i in infos if i.type == pafs.FileType.File]


@contextlib.contextmanager
def local_copy(path: str, *, max_bytes: int, download: bool | None = None) -> Iterator[str]:
    """A local path for `path`: itself when local, else a temp download of the take and its
    companions (same basenames, so labels and clip ids do not change). The size limit is
    checked *before* downloading (MotionFormatError reason too_large / io, naming `path`).
    `download=True` forces the download path (tests use it with `file://` URIs)."""
    if download is None:
        download = is_uri(path) and not path.startswith("file://")
    if not download:
        yield path[len("file://"):] if path.startswith("file://") else path
        return
    fs, fpath = _filesystem(path)
    tmp = tempfile.mkdtemp(prefix="stickgen-src-")
    try:
        try:
            info = fs.get_file_info(fpath)
            if info.size is not None and info.size > max_bytes:
                raise MotionFormatError(path, f"file is {info.size} bytes, over the limit of {max_bytes}",
                                        reason="too_large")
            for p in [fpath] + _companions(fs, fpath):
                _download(fs, p, os.path.join(tmp, posixpath.basename(p)), path, max_bytes)
        except OSError as e:
            raise MotionFormatError(path, f"cannot read file: {e}", reason="io") from e
        yield os.path.join(tmp, posixpath.basename(fpath))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(fs, src_path: str, dst: str, uri: str, max_bytes: int) -> None:
    with fs.open_input_stream(src_path) as src, open(dst, "wb") as out:
        copied = 0
        while chunk := src.read(1 << 20):
            copied += len(chunk)
            if copied > max_bytes:
                raise MotionFormatError(uri, f"file is over the limit of {max_bytes} bytes", reason="too_large")
            out.write(chunk)
