"""Download rules' logic (agfsync.core.downloads) against a local HTTP server: resume with a
Range request, verification against the recorded checksum, clear errors."""

from __future__ import annotations

import hashlib
from http.server import BaseHTTPRequestHandler

import pytest
from fake_openai import LocalServer

from agfsync.core.config import load_config
from agfsync.core.downloads import DownloadError, download_file, hub_marker, hub_repos, is_hub_id

DATA = bytes(range(256)) * 4096  # 1 MiB


class FileServer(LocalServer):
    """Serves `content` at /file.bin. mode: 'ok' | 'break_once' (the first response stops
    half way) | 'no_range' (ignores Range headers)."""

    def __init__(self, content: bytes, mode: str = "ok"):
        self.content, self.mode, self.requests = content, mode, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/file.bin":
                    self.send_error(404, "Not Found")
                    return
                server.requests.append(self.headers.get("Range"))
                body, status = server.content, 200
                wanted = self.headers.get("Range")
                if wanted and server.mode != "no_range":
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    body, status = server.content[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {len(server.content) - len(body)}-{len(server.content) - 1}/{len(server.content)}")
                self.end_headers()
                if server.mode == "break_once" and len(server.requests) == 1:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.serve(Handler)

    @property
    def url(self) -> str:
        return f"{self.root_url}/file.bin"


def test_download_records_the_checksum(tmp_path):
    dest = tmp_path / "resources" / "weights" / "w.bin"
    with FileServer(DATA) as server:
        info = download_file(server.url, dest, progress=False)
    assert dest.read_bytes() == DATA
    digest = hashlib.sha256(DATA).hexdigest()
    assert info == {"path": str(dest), "bytes": len(DATA), "sha256": digest, "resumed_from": 0}
    assert (tmp_path / "resources" / "weights" / "w.bin.sha256").read_text() == f"{digest}  w.bin\n"
    assert not (tmp_path / "resources" / "weights" / "w.bin.part").exists()


def test_broken_transfer_resumes_with_a_range_request(tmp_path):
    dest = tmp_path / "w.bin"
    with FileServer(DATA, mode="break_once") as server:
        with pytest.raises(DownloadError, match=r"w.bin: .*rerun to resume") as err:
            download_file(server.url, dest, progress=False)
        assert not dest.exists()
        kept = (tmp_path / "w.bin.part").stat().st_size
        assert 0 < kept < len(DATA), str(err.value)
        info = download_file(server.url, dest, progress=False)
        assert server.requests == [None, f"bytes={kept}-"]
    assert info["resumed_from"] == kept
    assert dest.read_bytes() == DATA


def test_server_ignoring_the_range_restarts_from_zero(tmp_path):
    dest = tmp_path / "w.bin"
    (tmp_path / "w.bin.part").write_bytes(b"garbage that is not the file's prefix")
    with FileServer(DATA, mode="no_range") as server:
        info = download_file(server.url, dest, progress=False)
    assert info["resumed_from"] == 0 and dest.read_bytes() == DATA


def test_download_differing_from_the_recorded_checksum_is_refused(tmp_path):
    dest = tmp_path / "w.bin"
    with FileServer(DATA) as server:
        download_file(server.url, dest, progress=False)
        dest.unlink()  # e.g. deleted to re-download; the upstream file changed meanwhile
        server.content = DATA[::-1]
        with pytest.raises(DownloadError, match=r"w.bin: SHA-256 [0-9a-f]{64} of the download from .* differs from "
                                                r"[0-9a-f]{64} \(.*w.bin.sha256\); the file was discarded"):
            download_file(server.url, dest, progress=False)
    assert not dest.exists() and not (tmp_path / "w.bin.part").exists()


def test_download_differing_from_the_config_checksum_is_refused(tmp_path):
    with FileServer(DATA) as server:
        with pytest.raises(DownloadError, match=r"differs from 0{64} \(downloads.files\[\].sha256 in the config\)"):
            download_file(server.url, tmp_path / "w.bin", sha256="0" * 64, progress=False)
        download_file(server.url, tmp_path / "w.bin", sha256=hashlib.sha256(DATA).hexdigest(), progress=False)


def test_http_error_names_the_file_and_status(tmp_path):
    with FileServer(DATA) as server:
        with pytest.raises(DownloadError, match=r"w.bin: GET .*/missing.bin failed: HTTP 404 Not Found"):
            download_file(server.url.replace("file.bin", "missing.bin"), tmp_path / "w.bin", progress=False)


def test_hub_repositories_come_from_the_config(repo):
    paper = load_config(repo / "config" / "config.yaml")
    assert hub_repos(paper) == {
        "BAAI/bge-large-en-v1.5": None,  # prompts.dedup.embedder: bge
        "CompVis/stable-diffusion-v1-4": None, "Salesforce/blip2-flan-t5-xxl": None, "openai/clip-vit-base-patch16": None,
        "openai/clip-vit-large-patch14": None, "sentence-transformers/all-mpnet-base-v2": None,
        "stabilityai/stable-diffusion-xl-base-1.0": None, "stable-diffusion-v1-5/stable-diffusion-v1-5": None,
    }
    assert hub_repos(load_config(repo / "config" / "tiny.yaml")) == {}  # tiny local models: nothing to fetch
    assert hub_marker("openai/clip-vit-base-patch16") == "resources/hub/openai--clip-vit-base-patch16.json"
    assert not is_hub_id("resources/tiny_models") and not is_hub_id("./model/dir") and is_hub_id("org/model-1.5")


class FakeHub:
    """HfApi.model_info and snapshot_download over a local directory (no network here)."""

    def __init__(self, root, sizes):
        self.root, self.sizes, self.calls = root, sizes, []

    def model_info(self, repo_id, revision=None, files_metadata=False):
        from types import SimpleNamespace

        self.calls.append(("info", repo_id, revision, files_metadata))
        return SimpleNamespace(sha="c0ffee" * 6 + "beef", siblings=[
            SimpleNamespace(rfilename=name, size=size) for name, size in self.sizes.items()])

    def snapshot(self, repo_id, revision=None, ignore_patterns=None):
        self.calls.append(("snapshot", repo_id, revision, tuple(ignore_patterns or ())))
        return str(self.root)


def test_hub_snapshot_is_pinned_to_the_commit_and_sizes_are_checked(tmp_path):
    import json

    from agfsync.core.downloads import download_hub

    snap = tmp_path / "snap"
    (snap / "unet").mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    (snap / "unet" / "w.safetensors").write_bytes(b"x" * 10)
    hub = FakeHub(snap, {"model_index.json": 2, "unet/w.safetensors": 10, "unet/w.ckpt": 99})
    record = download_hub("org/model", None, tmp_path / "marker.json", ignore_patterns=["*.ckpt"], api=hub,
                          snapshot=hub.snapshot)
    assert hub.calls[1] == ("snapshot", "org/model", "c0ffee" * 6 + "beef", ("*.ckpt",))  # the commit just resolved
    assert json.loads((tmp_path / "marker.json").read_text()) == record
    assert record["files"] == {"model_index.json": 2, "unet/w.safetensors": 10} and record["bytes"] == 12
    hub.sizes["unet/w.safetensors"] = 11  # a truncated blob in the cache
    with pytest.raises(DownloadError, match=r"org/model@c0ffee.*: 1 file\(s\) differ in size from the hub's "
                                            r"metadata \(e.g. unet/w.safetensors: 10 bytes, expected 11\)"):
        download_hub("org/model", None, tmp_path / "marker2.json", api=hub, snapshot=hub.snapshot)
    assert not (tmp_path / "marker2.json").exists()
