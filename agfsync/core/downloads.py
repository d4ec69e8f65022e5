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
    for name in cfg["run_models"] if models is None else models:
        model = cfg["models"][name]
        if is_hub_id(model["pretrained"]):
            repos[model["pretrained"]] = model.get("revision")
    scores = cfg["scores"]
    from agfsync.core.dag import dedup_values, tifa_answering_values

    for value in (scores["vqa"]["model"], scores["clip"]["model"], scores["aesthetic"]["backbone"],
                  *tifa_answering_values(cfg), *dedup_values(cfg)):
        if is_hub_id(value):
            repos.setdefault(value, None)
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
    size = dest.stat().st_size
    log.info("download: %s: %d bytes, sha256 %s%s", dest, size, digest,
             f" (resumed at byte {resumed_from})" if resumed_from else "")
    return {"path": str(dest), "bytes": size, "sha256": digest, "resumed_from": resumed_from}


def download_hub(repo_id: str, revision: str | None, marker: str | os.PathLike, *, ignore_patterns=None,
                 api=None, snapshot=None) -> dict:
    """Snapshot a hub repository into the Hugging Face cache (resumable: huggingface_hub
    keeps partial blobs), check every file's size against the hub's metadata, and write
    the marker atomically. `api` / `snapshot` replace HfApi() / snapshot_download (tests)."""
    os.environ["HF_HUB_OFFLINE"] = "0"
    if api is None or snapshot is None:
        from huggingface_hub import HfApi, snapshot_download

        api, snapshot = api or HfApi(), snapshot or snapshot_download
    info = api.model_info(repo_id, revision=revision, files_metadata=True)
    path = Path(snapshot(repo_id, revision=info.sha, ignore_patterns=ignore_patterns))
    expected = {s.rfilename: s.size for s in info.siblings if getattr(s, "size", None) is not None}
    files = {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}
    wrong = {name: (size, expected[name]) for name, size in files.items() if name in expected and expected[name] != size}
    if wrong:
        name, (got, want) = next(iter(wrong.items()))
        raise DownloadError(f"{repo_id}@{info.sha}: {len(wrong)} file(s) differ in size from the hub's metadata "
                            f"(e.g. {name}: {got} bytes, expected {want}); delete them from the cache and rerun")
    record = {"repo_id": repo_id, "revision": revision, "commit": info.sha, "snapshot": str(path), "files": files,
              "bytes": sum(files.values())}
    write_json(marker, record)
    log.info("download: %s@%s: %d files, %d bytes, sizes verified", repo_id, info.sha, len(files), record["bytes"])
    return record
