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


@pytest.fixture(autouse=True)
def unpinned_allowed(monkeypatch):
    """These tests fetch unpinned files on purpose (the flag a user passes to record digests);
    the refusal without it: test_unpinned_downloads_are_refused_without_the_flag."""
    monkeypatch.setenv("AGFSYNC_ALLOW_UNPINNED", "1")


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
        "google-bert/bert-base-uncased": None, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": None,  # ImageReward, PickScore
        "yuvalkirstain/PickScore_v1": None,
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
    # the commit just resolved; the config's patterns, then the .ckpt twin of the safetensors weights
    assert hub.calls[1] == ("snapshot", "org/model", "c0ffee" * 6 + "beef", ("*.ckpt", "unet/w.ckpt"))
    assert json.loads((tmp_path / "marker.json").read_text()) == record
    assert record["files"] == {"model_index.json": 2, "unet/w.safetensors": 10} and record["bytes"] == 12
    hub.sizes["unet/w.safetensors"] = 11  # a truncated blob in the cache
    with pytest.raises(DownloadError, match=r"org/model@c0ffee.*: 1 file\(s\) differ in size from the hub's "
                                            r"metadata \(e.g. unet/w.safetensors: 10 bytes, expected 11\)"):
        download_hub("org/model", None, tmp_path / "marker2.json", api=hub, snapshot=hub.snapshot)
    assert not (tmp_path / "marker2.json").exists()


def test_unpinned_downloads_are_refused_without_the_flag(tmp_path, monkeypatch):
    from agfsync.core.downloads import download_hub

    monkeypatch.delenv("AGFSYNC_ALLOW_UNPINNED")
    with FileServer(DATA) as server:
        with pytest.raises(DownloadError, match=r"weights.bin: its downloads.files entry has no sha256, so nothing says "
                                                r"which bytes are right; pin it .* set AGFSYNC_ALLOW_UNPINNED=1"):
            download_file(server.url, tmp_path / "weights.bin", progress=False)
        assert server.requests == []  # refused before any request
        pinned = hashlib.sha256(DATA).hexdigest()
        assert download_file(server.url, tmp_path / "pinned.bin", sha256=pinned, progress=False)["sha256"] == pinned
        (tmp_path / "known.bin.sha256").write_text(f"{pinned}  known.bin\n")  # recorded by an earlier, flagged run
        assert download_file(server.url, tmp_path / "known.bin", progress=False)["sha256"] == pinned
    hub = FakeHub(tmp_path, {})
    for revision in (None, "main", "v1.0"):
        with pytest.raises(DownloadError, match=rf"org/model: revision {revision!r} is not a commit, so the files can "
                                                r"change under the same name; pin it \(downloads.hub_revisions"):
            download_hub("org/model", revision, tmp_path / "m.json", api=hub, snapshot=hub.snapshot)
    assert hub.calls == []
    download_hub("org/model", "c0ffee" * 6 + "beef", tmp_path / "m.json", api=hub, snapshot=hub.snapshot)
    assert hub.calls[0] == ("info", "org/model", "c0ffee" * 6 + "beef", True)


def test_hub_snapshots_skip_what_the_loaded_classes_never_read():
    from agfsync.core.downloads import redundant_files

    sdxl = ["model_index.json", "sd_xl_base_1.0.safetensors", "sd_xl_offset_example-lora_1.0.safetensors",
            "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin",
            "unet/openvino_model.xml", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
            "text_encoder/pytorch_model.bin", "text_encoder/model.onnx", "safety_checker/model.safetensors",
            "tokenizer/vocab.json"]
    assert redundant_files(sdxl) == [
        "safety_checker/model.safetensors", "sd_xl_base_1.0.safetensors", "sd_xl_offset_example-lora_1.0.safetensors",
        "text_encoder/model.onnx", "text_encoder/pytorch_model.bin", "unet/diffusion_pytorch_model.bin",
        "unet/openvino_model.xml"]
    blip2 = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
             "model.safetensors.index.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
             "pytorch_model.bin.index.json"]
    assert redundant_files(blip2) == ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    # a repository that ships only .bin weights keeps them; a transformers repo keeps root safetensors
    assert redundant_files(["config.json", "pytorch_model.bin"]) == []
    assert redundant_files(["config.json", "model.safetensors"]) == []


def test_hub_revisions_pin_scorers_and_models(repo):
    import copy

    paper = copy.deepcopy(load_config(repo / "config" / "config.yaml"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    paper["downloads"]["hub_revisions"] = {"Salesforce/blip2-flan-t5-xxl": commit,
                                           "stabilityai/stable-diffusion-xl-base-1.0": commit}
    repos = hub_repos(paper)
    assert repos["Salesforce/blip2-flan-t5-xxl"] == commit and repos["stabilityai/stable-diffusion-xl-base-1.0"] == commit
    assert repos["openai/clip-vit-base-patch16"] is None
