"""Compute per stage (agfsync.core.costs) from Snakemake benchmark files, the GPUs per job
(agfsync.core.dag.job_gpus) and the hub commits of provenance. Pure and fast: hand-written
files in tmp_path, no torch, no workflow run."""

from __future__ import annotations

import copy
import re

import pytest

from agfsync.core import costs, dag, provenance
from agfsync.core.config import load_config
from agfsync.core.downloads import hub_marker
from agfsync.core.io import write_json
from conftest import REPO

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"


def row(seconds: float) -> str:
    return f"{seconds:.4f}\t0:00:00\t2048.11\t9123.40\t1990.02\t2000.50\t12.30\t45.60\t97.21\t{seconds * 0.9:.2f}"


def bench(root, relative: str, *seconds: float, lines=None) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines if lines is not None else [HEADER, *map(row, seconds)]) + "\n")


@pytest.fixture
def tree(tmp_path):
    bench(tmp_path, "benchmarks/prompts/prompts_generate.tsv", 120.25)
    bench(tmp_path, "benchmarks/sd15/candidates_generate/shard-00000.tsv", 3600.5)
    bench(tmp_path, "benchmarks/sd15/candidates_generate/shard-00001.tsv", 1799.5)
    bench(tmp_path, "benchmarks/sd15/train_dpo.tsv", 7200.0, 1800.0)  # repeat(): two runs of one job
    bench(tmp_path, "benchmarks/sdxl/candidates_generate/shard-00000.tsv", 900.0)
    bench(tmp_path, "benchmarks/notes/whatever.tsv", 99999.0)  # no rule's: not counted
    return tmp_path


GPUS = {"candidates_generate": 1, "train_dpo": 4}


def test_golden_sums_per_model_and_stage(tree):
    got = costs.collect(tree, GPUS, models=["sd15"])
    assert [(s.model, s.rule, s.jobs, s.runs, s.gpus) for s in got.stages] == [
        (None, "prompts_generate", 1, 1, 0), ("sd15", "candidates_generate", 2, 2, 1), ("sd15", "train_dpo", 1, 2, 4)]
    prompts, cands, train = got.stages
    assert cands.wall_s == pytest.approx(5400.0) and cands.gpu_hours == pytest.approx(1.5)
    assert train.wall_s == pytest.approx(9000.0) and train.gpu_hours == pytest.approx(10.0)
    assert prompts.wall_s == pytest.approx(120.25) and prompts.gpu_hours == 0
    assert got.total() == pytest.approx({"jobs": 4, "wall_s": 14520.25, "gpu_hours": 11.5})
    assert costs.hms(got.total()["wall_s"]) == "4:02:00" and costs.hms(cands.wall_s) == "1:30:00"
    assert not got.skipped


def test_per_stage_totals_sum_over_models(tree):
    got = costs.collect(tree, GPUS)  # sdxl too
    cands = next(s for s in got.per_rule() if s.rule == "candidates_generate")
    assert (cands.model, cands.jobs, cands.wall_s, cands.gpu_hours) == (None, 3, pytest.approx(6300.0),
                                                                         pytest.approx(1.75))
    assert [s.rule for s in got.per_rule()] == ["prompts_generate", "candidates_generate", "train_dpo"]


def test_no_benchmarks_folder_is_not_measured(tmp_path):
    got = costs.collect(tmp_path, GPUS)
    assert not got.measured and got.total() == {"jobs": 0, "wall_s": 0, "gpu_hours": 0}


@pytest.mark.parametrize("lines, where", [
    ([HEADER, row(10.0), "12.5\t0:00:12"], ":3: 2 fields, the header has 10"),
    ([HEADER, row(10.0).replace("10.0000", "NA", 1)], ":2: wall seconds 'NA' is not a number"),
    ([HEADER, row(-1.0)], ":2: wall seconds"),
    (["seconds\tcpu", "1\t2"], ":1: not a Snakemake benchmark header"),
    ([HEADER], ":2: no run under the header"),
])
def test_a_malformed_file_is_an_error_naming_file_and_line(tmp_path, lines, where):
    bench(tmp_path, "benchmarks/sd15/pairs_select.tsv", lines=lines)
    path = tmp_path / "benchmarks/sd15/pairs_select.tsv"
    with pytest.raises(costs.BenchmarkError) as err:
        costs.read_benchmark(path)
    assert str(err.value).startswith(f"{path}{where}")


def test_collect_leaves_a_malformed_file_out_and_says_so(tree, caplog):
    bench(tree, "benchmarks/sd15/pairs_select.tsv", lines=[HEADER, "3.0\t0:00:03"])
    got = costs.collect(tree, GPUS, models=["sd15"])
    assert got.total()["wall_s"] == pytest.approx(14520.25)  # the torn file adds nothing
    assert len(got.skipped) == 1 and "pairs_select.tsv:2: 2 fields" in got.skipped[0]
    assert "pairs_select.tsv:2" in caplog.text


def test_benchmark_paths_map_to_their_rule_and_model():
    assert costs.rule_of("benchmarks/models/models_tiny.tsv") == ("models_tiny", None)
    assert costs.rule_of("benchmarks/eval/eval_reference_mjhq.tsv") == ("eval_reference_mjhq", None)
    assert costs.rule_of("benchmarks/sd14/eval_score/agfsync/mjhq/features-00003.npz.tsv") == ("eval_score", "sd14")
    assert costs.rule_of("benchmarks/sd14/eval_generate/base/tifa/shard-00000.tsv") == ("eval_generate", "sd14")
    assert costs.rule_of("benchmarks/sd14/unknown.tsv") is None


# ----------------------------------------------------------------------------- GPUs per job


def test_gpus_per_job_follow_the_rules_resources():
    cfg = load_config(REPO / "config" / "config.yaml")
    cfg["device"], cfg["train"]["gpus"], cfg["train"]["nodes"] = "cuda", 4, 1
    got = dag.job_gpus(cfg)
    assert got["train_dpo"] == 4 and got["eval_score"] == 1 and "pairs_select" not in got
    multi = copy.deepcopy(cfg)
    multi["train"]["nodes"] = 3  # gres=gpu:4 per node
    assert dag.job_gpus(multi)["train_dpo"] == 12
    cfg["device"] = "cpu"
    assert set(dag.job_gpus(cfg).values()) == {0}


def rule_bodies() -> dict[str, str]:
    """Each rule's body in workflow/rules/*.smk: its lines indented under `rule <name>:`."""
    bodies: dict[str, str] = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        current, indent = None, 0
        for line in path.read_text().splitlines():
            head = re.match(r"^(\s*)rule (\w+):", line)
            width = len(line) - len(line.lstrip())
            if head:
                current, indent = head.group(2), len(head.group(1))
                bodies[current] = ""
            elif current and line.strip() and width <= indent:
                current = None
            elif current:
                bodies[current] += line + "\n"
    return bodies


def test_the_gpu_rules_are_the_ones_the_smk_files_give_gpus():
    bodies = rule_bodies()
    assert "pairs_select" in bodies and "report" in bodies
    found = {name for name, body in bodies.items() if "gpu=MODEL_GPUS" in body or "train_resources()" in body}
    assert found == {*dag.MODEL_GPU_RULES, "train_dpo"}
    assert set(found) <= set(costs.STAGES)  # every GPU rule writes a benchmark file


# ----------------------------------------------------------------------------- hub commits


def test_hub_commits_come_from_the_download_markers(tmp_path):
    write_json(tmp_path / hub_marker("owner/model"), {"repo_id": "owner/model", "revision": "v1.0",
                                                       "commit": "a" * 40, "files": {}, "bytes": 0})
    write_json(tmp_path / hub_marker("owner/stale"), {"repo_id": "owner/stale", "revision": None,
                                                       "commit": "b" * 40, "files": {}, "bytes": 0})
    got = provenance.hub_commits({"owner/model": "v1.0", "owner/stale": "v2", "owner/absent": None}, tmp_path)
    assert got == {"owner/absent": {"revision": None, "commit": None, "marker_revision": None},
                   "owner/model": {"revision": "v1.0", "commit": "a" * 40, "marker_revision": "v1.0"},
                   "owner/stale": {"revision": "v2", "commit": "b" * 40, "marker_revision": None}}
