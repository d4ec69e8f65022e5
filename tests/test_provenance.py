"""Provenance of result files (agfsync.core.provenance): the git state of the checkout, the
package versions and the machine, in every result file and in the report."""

from __future__ import annotations

import subprocess
from importlib.metadata import version

import pytest

from agfsync.core import provenance


def _git(root, *argv):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=root, check=True,
                   capture_output=True)


def test_git_state_names_the_commit_and_whether_tracked_files_changed(tmp_path):
    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None}  # no checkout
    (tmp_path / "a.txt").write_text("one\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert provenance.git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "new.txt").write_text("untracked files are not the code that ran\n")
    assert provenance.git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("two\n")
    assert provenance.git_state(tmp_path) == {"commit": head, "dirty": True}


def test_package_versions_come_from_the_installed_distributions(monkeypatch):
    monkeypatch.setattr(provenance, "PACKAGES", ("numpy", "no-such-distribution-agfsync"))
    assert provenance.packages() == {"numpy": version("numpy"), "no-such-distribution-agfsync": None}


def test_every_result_file_carries_the_provenance_of_the_process_that_wrote_it(demo_config):
    from agfsync.stages import metrics as results
    from test_eval_metrics import cfg_for_results

    rows = {v: [{"prompt_id": "a", "group": "g", "clip": 1.0}, {"prompt_id": "b", "group": "g", "clip": 2.0}]
            for v in ("base", "agfsync")}
    result = results.mean_result("clipscore", "clip", "sd15", cfg_for_results(demo_config), "0" * 16, rows, {})
    results.validate(result)
    assert result["provenance"] == provenance.collect()
    assert result["provenance"]["packages"]["numpy"] == version("numpy")
    assert result["provenance"]["git"] == provenance.git_state()
    result["provenance"]["git"]["commit"] = "abc"
    with pytest.raises(Exception, match=r"provenance.git.commit: 'abc' does not match"):
        results.validate(result, "out.json")


def test_the_report_lists_each_code_state_with_its_result_files():
    from agfsync.report.page import code_states

    class Loaded:
        def __init__(self, model, results):
            self.model, self.results = model, results

    state = {"agfsync": "0.1.0", "git": {"commit": "0123456789abcdef" * 2 + "01234567", "dirty": True},
             "python": "3.12.1", "packages": {"torch": "2.10.0", "numpy": "2.1.0", "deepspeed": None},
             "hardware": {"machine": "x86_64", "cpus": 2, "gpus": []}}
    other = {**state, "git": {"commit": None, "dirty": None},
             "hardware": {"machine": "x86_64", "cpus": 16, "gpus": ["NVIDIA H200", "NVIDIA H200"]}}
    html = code_states([Loaded("sd15", {"tifa": {"provenance": state}, "hpsv2": {"provenance": state}}),
                        Loaded("sdxl", {"tifa": {"provenance": other}, "gold": {}})])
    assert html == (
        '<div class="note" id="code-states">Result files written by (more than one: the results come from different '
        'code or machines):<ul><li>agfsync 0.1.0 (git 0123456789ab with uncommitted changes); Python 3.12.1, torch '
        '2.10.0; written on x86_64, 2 CPUs, no GPU: sd15/tifa, sd15/hpsv2</li><li>agfsync 0.1.0 (no git checkout); '
        'Python 3.12.1, torch 2.10.0; written on x86_64, 16 CPUs, GPUs: NVIDIA H200, NVIDIA H200: sdxl/tifa</li>'
        '</ul></div>')
    assert code_states([Loaded("sd15", {"tifa": {}})]) == ""


def test_a_result_file_records_the_hub_commits_of_its_models(demo_config, tmp_path, monkeypatch):
    """eval_metric passes the model's hub repositories (downloads.hub_repos); the file records
    the commit each download marker names, null where there is none."""
    from agfsync.core.downloads import hub_marker, hub_repos
    from agfsync.core.io import read_json, write_json, write_jsonl
    from agfsync.stages import metrics as results
    from test_eval_metrics import cfg_for_results

    monkeypatch.chdir(tmp_path)  # markers are read from resources/hub/ of the working directory
    write_json(hub_marker("owner/sd"), {"repo_id": "owner/sd", "revision": "fp16", "commit": "d" * 40})
    inputs = {}
    for variant, clip in (("base", 1.0), ("agfsync", 2.0)):
        inputs[variant] = [str(tmp_path / f"{variant}.jsonl")]
        write_jsonl(inputs[variant][0], [{"prompt_id": p, "group": "g", "clip": clip + i} for i, p in enumerate("ab")])
    hub = {"owner/sd": "fp16", "owner/clip": None}
    result = results.write_metric(cfg_for_results(demo_config), "sd15", "clipscore", inputs, tmp_path / "c.json",
                                  "0" * 16, hub=hub)
    want = {"owner/clip": {"revision": None, "commit": None, "marker_revision": None},
            "owner/sd": {"revision": "fp16", "commit": "d" * 40, "marker_revision": "fp16"}}
    assert result["provenance"]["hub"] == want and read_json(tmp_path / "c.json")["provenance"]["hub"] == want
    cfg = {**demo_config, "models": {"a": {"pretrained": "owner/sd", "revision": "fp16"},
                                     "b": {"pretrained": "owner/other", "revision": None}}}
    assert list(hub_repos(cfg, ["a"])) == sorted(["owner/sd", *hub_repos({**cfg, "run_models": []})])
