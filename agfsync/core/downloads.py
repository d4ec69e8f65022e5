"""Downloads (local rules download_file and download_hub): benchmark data and weights are
fetched on the login node, so compute jobs run with the hub offline (HF_HUB_OFFLINE=1).

Files (config downloads.files, each {path, url, sha256}):
  - fetched into `<path>.part`, resumed with an HTTP Range request after an interruption
    (a server that ignores the range makes us start again), renamed into place when complete;
  - verified: the Content-Length, then the SHA-256: against downloads.files[].sha256 when
    the config gives one, else against the checksum recorded in `<path>.sha256` on the
    first download (so a later re-download that differs is refused).
Hub repositories (diffusers pipelines, BLIP-2, CLIP) are the config's model ids that are
not local paths; huggingface_hub resumes those itself. A marker
resources/hub/<owner>--<name>.json records the commit and the size of every file.
Pinning: a file without a sha256 (and no checksum recorded by an earlier download) and a hub
repository whose revision is not a commit (models.<name>.revision, downloads.hub_revisions)
are refused, unless AGFSYNC_ALLOW_UNPINNED=1 is set: then the download records what it got
(`<path>.sha256`; the commit in the hub marker) and the log says how to pin it.
Hub snapshots leave out what the classes we load never read (redundant_files): weights a
folder also has as safetensors (.bin, .pth, .ckpt, .msgpack, .h5), single-file checkpoints at
the root of a diffusers pipeline, the safety checker, ONNX / OpenVINO exports.
This module imports no torch.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from agfsync.core.io import write_json

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
ALLOW_UNPINNED = "AGFSYNC_ALLOW_UNPINNED"  # the explicit flag: accept an unpinned download and record its digest
_TWINS = (".bin", ".pth", ".pt", ".ckpt", ".msgpack", ".h5")


def unpinned_allowed() -> bool:
    return os.environ.get(ALLOW_UNPINNED, "").strip().lower() not in ("", "0", "false", "no")


def redundant_files(names: list[str]) -> list[str]:
    """Files of a hub repository that loading its diffusers / transformers classes never reads."""
    folders: dict[str, set[str]] = {}
    for name in names:
        folder, _, base = name.rpartition("/")
        folders.setdefault(folder, set()).add(base)
    pipeline = "model_index.json" in folders.get("", set())
    out = []
    for name in names:
        folder, _, base = name.rpartition("/")
        lower = name.lower()
        if base.endswith(_TWINS) and any(b.endswith(".safetensors") for b in folders[folder]):
            out.append(name)  # the same weights twice: the safetensors copy is what loads
        elif pipeline and not folder and base.endswith((".safetensors", ".ckpt")):
            out.append(name)  # a single-file checkpoint next to the pipeline's folders
        elif lower.startswith("safety_checker/") or "openvino" in lower or lower.endswith((".onnx", ".onnx_data")):
            out.append(name)
    return sorted(out)


class DownloadError(RuntimeError):
    pass


def is_hub_id(value: str) -> bool:
    """'owner/name' and not a local path (absolute, relative with ./ or ../, or under resources/)."""
    return (isinstance(value, str) and bool(_HUB_ID.match(value))
            and not value.startswith(("resources/", "./", "../", "data/", "results/")))


def hub_marker(repo_id: str) -> str:
    return f"resources/hub/{marker_name(repo_id)}.json"


def marker_name(repo_id: str) -> str:
    return repo_id.replace("/", "--")


def repo_of(marker: str) -> str:
    """Inverse of marker_name."""
    return marker.replace("--", "/", 1)


def needed(values, files, hubs) -> list[str]:
    """The download outputs behind config values: a listed file, the listed files under a
    directory value, or a hub repository's marker. Local paths need nothing."""
    out = set()
    for value in values:
        value = str(value)
        prefix = value.rstrip("/") + "/"
        out.update(path for path in files if path == value or path.startswith(prefix))
        if is_hub_id(value) and value in hubs:
            out.add(hub_marker(value))
    return sorted(out)


def hub_repos(cfg: dict, models=None) -> dict[str, str | None]:
    """Hub repository -> revision, for every model the config loads from the hub (of the
    text-to-image models, those of `models`; None: the run models), scorers included."""
    repos: dict[str, str | None] = {}
    pins = cfg.get("downloads", {}).get("hub_revisions") or {}
    for name in cfg["run_models"] if models is None else models:
        model = cfg["models"][name]
        if is_hub_id(model["pretrained"]):
            repos[model["pretrained"]] = model.get("revision") or pins.get(model["pretrained"])
    scores = cfg["scores"]
    from agfsync.core.dag import dedup_values, tifa_answering_values
    from agfsync.core.rewards import enabled_rewards, reward_values

    rewards = [value for reward in enabled_rewards(cfg) for value in reward_values(cfg, reward)]
    for value in (scores["vqa"]["model"], scores["clip"]["model"], scores["aesthetic"]["backbone"],
                  *tifa_answering_values(cfg), *dedup_values(cfg), *rewards):
        if is_hub_id(value):
            repos.setdefault(value, pins.get(value))
    return dict(sorted(repos.items()))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: str | os.PathLike, *, sha256: str | None = None, progress: bool = True,
                  timeout: float = 60.0) -> dict:
    """Fetch `url` into `dest` (resumable, verified); returns {"path", "bytes", "sha256", "resumed_from"}."""
    from tqdm import tqdm

    dest = Path(dest)
    if not sha256 and not _sidecar(dest).exists() and not unpinned_allowed():
        raise DownloadError(f"{dest}: its downloads.files entry has no sha256, so nothing says which bytes are right; "
                            f"pin it (the published SHA-256), or set {ALLOW_UNPINNED}=1 to accept this download and "
                            f"record its digest in {_sidecar(dest)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "agfsync"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the part file is already complete (or longer than the file)
            response = None
        else:
            raise DownloadError(f"{dest}: GET {url} failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{dest}: GET {url} failed: {err}; rerun to resume ({offset} bytes kept in {part})") from None
    resumed_from = 0
    if response is not None:
        with response:
            status = getattr(response, "status", 200)
            if offset and status == 206:
                resumed_from = offset
            elif offset:
                log.info("download: %s: the server ignored the range request; starting again", url)
                offset = 0
            length = response.headers.get("Content-Length")
            expected = offset + int(length) if length is not None else None
            mode = "ab" if offset else "wb"
            with open(part, mode) as handle, tqdm(total=expected, initial=offset, unit="B", unit_scale=True,
                                                 desc=dest.name, disable=not progress, mininterval=2) as bar:
                try:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        handle.write(block)
                        bar.update(len(block))
                except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
                    raise DownloadError(f"{dest}: transfer from {url} broke off ({err}); rerun to resume "
                                        f"({part.stat().st_size} bytes kept in {part})") from None
            size = part.stat().st_size
            if expected is not None and size != expected:
                raise DownloadError(f"{dest}: got {size} bytes of {expected} from {url}; rerun to resume")
    digest = _sha256(part)
    recorded_path = _sidecar(dest)
    recorded = recorded_path.read_text().split()[0] if recorded_path.exists() else None
    for source, want in (("downloads.files[].sha256 in the config", sha256), (f"{recorded_path}", recorded)):
        if want and digest != want:
            part.unlink()
            raise DownloadError(f"{dest}: SHA-256 {digest} of the download from {url} differs from {want} "
                                f"({source}); the file was discarded")
    os.replace(part, dest)
    if recorded is None:
        recorded_path.write_text(f"{digest}  {dest.name}\n")
        if not sha256:
            log.warning("download: %s was not pinned; recorded sha256 %s in %s: pin it with downloads.files[].sha256: "
                        "%s", dest, digest, recorded_path, digest)
    size = dest.stat().st_size
    log.info("download: %s: %d bytes, sha256 %s%s", dest, size, digest,
             f" (resumed at byte {resumed_from})" if resumed_from else "")
    return {"path": str(dest), "bytes": size, "sha256": digest, "resumed_from": resumed_from}


def download_hub(repo_id: str, revision: str | None, marker: str | os.PathLike, *, ignore_patterns=None,
                 api=None, snapshot=None) -> dict:
    """Snapshot a hub repository into the Hugging Face cache (resumable: huggingface_hub
    keeps partial blobs), check every file's size against the hub's metadata, and write
    the marker atomically. `api` / `snapshot` replace HfApi() / snapshot_download (tests)."""
    if not (revision and COMMIT.match(revision)) and not unpinned_allowed():
        raise DownloadError(f"{repo_id}: revision {revision!r} is not a commit, so the files can change under the same "
                            f"name; pin it (downloads.hub_revisions['{repo_id}'] or models.<name>.revision: the 40-hex "
                            f"commit), or set {ALLOW_UNPINNED}=1 to accept the commit it resolves to now (recorded in "
                            f"{marker})")
    os.environ["HF_HUB_OFFLINE"] = "0"
    if api is None or snapshot is None:
        from huggingface_hub import HfApi, snapshot_download

        api, snapshot = api or HfApi(), snapshot or snapshot_download
    info = api.model_info(repo_id, revision=revision, files_metadata=True)
    skipped = redundant_files([s.rfilename for s in info.siblings])
    path = Path(snapshot(repo_id, revision=info.sha, ignore_patterns=[*(ignore_patterns or ()), *skipped]))
    if revision != info.sha:
        log.warning("download: %s was not pinned (revision %r); it resolved to commit %s, recorded in %s: pin it with "
                    "downloads.hub_revisions['%s']: %s", repo_id, revision, info.sha, marker, repo_id, info.sha)
    expected = {s.rfilename: s.size for s in info.siblings if getattr(s, "size", None) is not None}
    files = {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}
    wrong = {name: (size, expected[name]) for name, size in files.items() if name in expected and expected[name] != size}
    if wrong:
        name, (got, want) = next(iter(wrong.items()))
        raise DownloadError(f"{repo_id}@{info.sha}: {len(wrong)} file(s) differ in size from the hub's metadata "
                            f"(e.g. {name}: {got} bytes, expected {want}); delete them from the cache and rerun")
    record = {"repo_id": repo_id, "revision": revision, "commit": info.sha, "snapshot": str(path), "files": files,
              "bytes": sum(files.values()), "skipped": skipped}
    write_json(marker, record)
    log.info("download: %s@%s: %d files, %d bytes, sizes verified", repo_id, info.sha, len(files), record["bytes"])
    return record
