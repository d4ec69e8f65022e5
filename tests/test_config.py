"""Config validation: the shipped configs are valid; bad ones fail naming the key."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO

from agfsync.core.config import ConfigError, check_config, load_config


@pytest.fixture(scope="module")
def paper() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_paper_config_has_the_papers_numbers(paper):
    cfg = check_config(copy.deepcopy(paper))
    assert cfg["seed"] == 200
    assert {m: (c["pretrained"], c["resolution"], c["train"]["lr"], c["train"]["global_batch"], c["train"]["steps"])
            for m, c in cfg["models"].items()} == {
        "sd14": ("CompVis/stable-diffusion-v1-4", 512, 5e-7, 128, 1000),
        "sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5", 512, 5e-7, 128, 1000),
        "sdxl": ("stabilityai/stable-diffusion-xl-base-1.0", 1024, 1e-6, 64, 1000),
    }
    assert (cfg["candidates"]["num_per_prompt"], cfg["candidates"]["sigma"]) == (8, 0.1)
    assert cfg["scores"]["weights"] == {"vqa": 0.35, "clip": 0.55, "aesthetic": 0.10}
    assert cfg["scores"]["clip"] == {"model": "openai/clip-vit-base-patch16", "gamma": 100}
    assert cfg["scores"]["vqa"]["model"] == "Salesforce/blip2-flan-t5-xxl"
    assert (cfg["prompts"]["llm"]["temperature"], cfg["prompts"]["llm"]["top_p"]) == (0.9, 0.7)
    assert cfg["prompts"]["dedup"]["threshold"] == 0.9 and cfg["qa"]["min_pairs"] == 5


def test_every_key_of_the_paper_config_has_a_comment():
    """A leaf key carries a comment, unless the same key was explained earlier (sd15 repeats
    sd14's keys, qa.llm repeats prompts.llm's)."""
    explained, previous = set(), ""
    for number, line in enumerate((REPO / "config" / "config.yaml").read_text().splitlines(), start=1):
        body = line.split("#")[0].strip()
        after_comment, previous = previous.strip().startswith("#"), line
        if not body or ":" not in body or body.endswith(":"):
            continue
        key = body.split(":")[0].strip()
        if "#" in line or after_comment:
            explained.add(key)
        assert key in explained, f"config/config.yaml line {number}: key {key!r} has no comment"


def test_defaults_are_filled(paper):
    cfg = copy.deepcopy(paper)
    del cfg["prompts"]["dedup"], cfg["tiny_models"], cfg["prompts"]["llm"]["concurrency"]
    check_config(cfg)
    assert cfg["prompts"]["dedup"] == {"threshold": 0.9, "embedder": "bge", "model": "BAAI/bge-large-en-v1.5"}
    assert cfg["tiny_models"] == {"enabled": False, "dir": "resources/tiny_models"}
    assert cfg["prompts"]["llm"]["concurrency"] == 8


def mutate(cfg, path, value):
    node = cfg
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return cfg


DELETE = object()
BAD = [
    ("typo at top level", "modles", {}, "unknown key 'modles' (allowed here: candidates, cpu_threads, device, downloads, eval, extends, llm_cache_dir, models, pairs, "
     "prompts, qa, run, run_models, scores, seed, tiny_models, train, world)"),
    ("missing key", "qa.llm.model", DELETE, "missing required key 'qa.llm.model'"),
    ("wrong type", "seed", "abc", "key 'seed': expected integer, got str 'abc'"),
    ("not in enum", "qa.mode", "yes-no", "key 'qa.mode': expected one of 'yes_no', 'multiple_choice'; got 'yes-no'"),
    ("below minimum", "candidates.num_per_prompt", 1, "key 'candidates.num_per_prompt': must be >= 2, got 1"),
    ("not positive", "models.sd14.train.lr", 0, "key 'models.sd14.train.lr': must be > 0, got 0"),
    ("resolution", "models.sdxl.resolution", 1020, "key 'models.sdxl.resolution': must be a multiple of 8, got 1020"),
    ("model name unsafe in paths", "models.SD-XL", None, "name 'SD-XL' must match"),
    ("unknown run model", "run_models", ["sd14", "sd21"], "key 'run_models[1]': 'sd21' is not defined under 'models' "
     "(defined: sd14, sd15, sdxl)"),
    ("weights", "scores.weights.clip", 0.5, "key 'scores.weights': weights must sum to 1, got 0.95"),
    ("probability", "scores.weights.vqa", 1.5, "key 'scores.weights.vqa': must be <= 1, got 1.5"),
    ("provider", "prompts.llm.provider", "anthropic", "key 'prompts.llm.provider': expected one of 'openai', 'file', "
     "'world'; got 'anthropic'"),
    ("file provider without file", "qa.llm.provider", "file", "key 'qa.llm.responses': provider 'file' needs the path"),
    ("category", "prompts.categories", ["Animals", "Dinosaurs"], "key 'prompts.categories[1]': unknown category "
     "'Dinosaurs'"),
    ("max < min pairs", "qa.max_pairs", 3, "key 'qa.max_pairs': must be >= qa.min_pairs (5), got 3"),
    ("empty run_models", "run_models", [], "key 'run_models': must have at least 1 item(s)"),
    ("duplicate run model", "run_models", ["sd14", "sd14"], "key 'run_models': items must be unique"),
    ("dedup threshold", "prompts.dedup.threshold", 1.5, "key 'prompts.dedup.threshold': must be <= 1, got 1.5"),
    ("secret in config", "prompts.llm.api_key", "sk-live-0123456789", "key 'prompts.llm.api_key': secrets never go "
     "into config files"),
    ("key pasted into api_key_env", "qa.llm.api_key_env", "sk-live-0123456789/abc", "key 'qa.llm.api_key_env': "
     "expected the NAME of an environment variable"),
    ("judge on a disabled benchmark", "eval.hpsv2.enabled", False, "key 'eval.judge.benchmark': the judge compares "
     "images of 'hpsv2', which is not enabled (eval.hpsv2.enabled)"),
    ("judge without an endpoint", "eval.judge.llm", DELETE, "key 'eval.judge.llm': the judge is enabled but has no "
     "llm section (a vision model endpoint)"),
    ("unknown HPS version", "eval.hpsv2.version", "v3", "key 'eval.hpsv2.version': expected one of 'v2.0', 'v2.1'; "
     "got 'v3'"),
    ("HPS checkpoint of another version", "eval.hpsv2.version", "v2.1", "key 'eval.hpsv2.checkpoint': "
     "HPS_v2_compressed.pt is HPS v2.0, but eval.hpsv2.version is 'v2.1': their scores are on different scales"),
    ("HPS v2.1 checkpoint as v2.0", "eval.hpsv2.checkpoint", "w/HPS_v2.1_compressed.pt", "key "
     "'eval.hpsv2.checkpoint': HPS_v2.1_compressed.pt is HPS v2.1, but eval.hpsv2.version is 'v2.0'"),
    ("unknown FID resize", "eval.mjhq.resize", "bicubic", "key 'eval.mjhq.resize': expected one of 'torchmetrics', "
     "'torch-fidelity', 'clean-fid'; got 'bicubic'"),
    ("unknown MJHQ category", "eval.mjhq.categories", ["animals", "cars"], "key 'eval.mjhq.categories[1]': expected "
     "one of 'animals'"),
    ("unknown gold answerer", "eval.tifa.gold", "oracle", "key 'eval.tifa.gold': expected one of 'world', None; "
     "got 'oracle'"),
    ("download outside resources", "downloads.files", [{"path": "/etc/passwd", "url": "https://x.org/a"}],
     "key 'downloads.files[0].path'"),
    ("download listed twice", "downloads.files", [{"path": "resources/a.json", "url": "https://x.org/a"}] * 2,
     "key 'downloads.files[1].path': 'resources/a.json' is listed twice"),
]


@pytest.mark.parametrize("what, path, value, message", BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_key(paper, what, path, value, message):
    cfg = copy.deepcopy(paper)
    if path == "models.SD-XL":
        cfg["models"]["SD-XL"] = cfg["models"]["sdxl"]
    else:
        mutate(cfg, path, value)
    with pytest.raises(ConfigError) as info:
        check_config(cfg, source="config/x.yaml")
    text = str(info.value)
    assert text.startswith("config/x.yaml: invalid config (")
    assert message in text
    assert "sk-live-0123456789" not in text


def test_gold_needs_tifa(paper):
    cfg = copy.deepcopy(paper)
    cfg["eval"]["tifa"].update(gold="world", enabled=False)
    with pytest.raises(ConfigError, match=r"key 'eval.tifa.gold': 'world' reads the TIFA images, but TIFA is not "
                                          r"enabled \(eval.tifa.enabled\)"):
        check_config(cfg, source="config/x.yaml")
    cfg["eval"]["tifa"]["enabled"] = True
    assert check_config(cfg)["eval"]["tifa"]["gold"] == "world"


def test_several_problems_are_reported_together(paper):
    cfg = copy.deepcopy(paper)
    cfg["seed"] = -1
    cfg["qa"]["mode"] = "free"
    with pytest.raises(ConfigError, match=r"\(2 problem\(s\)\):\n  - key 'qa.mode'.*\n  - key 'seed': must be >= 0"):
        check_config(cfg)


@pytest.mark.parametrize(
    "text, message",
    [
        ("seed: [1,\n", "not valid YAML (line 2, column 1)"),
        ("", "the config file is empty"),
        ("- a\n- b\n", "the config must be a mapping of keys to values, got list"),
    ],
)
def test_unreadable_config_files(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_check_config_exit_code(tmp_path, capsys):
    from agfsync.cli import main

    path = tmp_path / "c.yaml"
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    cfg["candidates"]["sigma"] = -0.1
    path.write_text(yaml.safe_dump(cfg))
    assert main(["check-config", str(path)]) == 2
    assert "key 'candidates.sigma': must be >= 0, got -0.1" in capsys.readouterr().err
    assert main(["check-config", "-q", str(REPO / "config" / "tiny.yaml")]) == 0


def test_operational_llm_settings_leave_params_and_come_back(paper):
    from agfsync.core.config import LLM_OPERATIONAL_KEYS, with_operational, without_operational

    cfg = check_config(copy.deepcopy(paper))
    params = without_operational({"seed": 1, "prompts": cfg["prompts"], "qa": cfg["qa"]})
    assert not set(LLM_OPERATIONAL_KEYS) & (set(params["prompts"]["llm"]) | set(params["qa"]["llm"]))
    assert params["prompts"]["llm"]["temperature"] == 0.9  # what shapes the answers stays
    assert "concurrency" in cfg["prompts"]["llm"]  # the input is not modified
    restored = with_operational(params, cfg)
    assert restored["prompts"] == cfg["prompts"] and restored["qa"] == cfg["qa"]


def test_training_launch_settings_are_operational(paper):
    from agfsync.core.config import config_digest, with_operational, without_operational

    cfg = check_config(copy.deepcopy(paper))
    assert cfg["train"]["launch"] == {"backend": "auto", "rendezvous_port": None, "join_timeout_s": 600}
    params = without_operational({"seed": 1, "train": cfg["train"]})
    assert "launch" not in params["train"] and params["train"]["nodes"] == 1  # the node count shapes the run
    assert with_operational(params, cfg)["train"] == cfg["train"]
    assert with_operational({"seed": 1}, cfg) == {"seed": 1}  # a stage without train gets none
    moved = copy.deepcopy(cfg)
    moved["train"]["launch"].update({"backend": "gloo", "rendezvous_port": 29999, "join_timeout_s": 60})
    assert config_digest(moved, "sdxl") == config_digest(cfg, "sdxl")


def test_config_digest_of_a_model_ignores_other_models_and_fetch_settings(paper):
    from agfsync.core.config import config_digest

    other = copy.deepcopy(paper)
    other["models"]["sd15"]["train"]["lr"] = 1e-5
    other["prompts"]["llm"]["concurrency"] = 1
    assert config_digest(other, "sdxl") == config_digest(paper, "sdxl")
    assert config_digest(other, "sd15") != config_digest(paper, "sd15")
    assert config_digest(other) != config_digest(paper)
    assert len(config_digest(paper)) == 16


def test_a_config_file_extends_the_paper_config_unless_it_says_otherwise(tmp_path, monkeypatch):
    """Snakemake's --configfile semantics (a file overrides config/config.yaml key by key),
    resolved by agfsync itself so that cluster jobs see the same config (resolve_config)."""
    from agfsync.core.config import load_config, resolve_config

    monkeypatch.chdir(REPO)
    overlay = tmp_path / "lr.yaml"
    overlay.write_text("models:\n  sdxl:\n    train:\n      lr: 2.0e-8\ntrain:\n  nodes: 2\n")
    cfg = load_config(overlay)
    paper = load_config(REPO / "config" / "config.yaml")
    assert cfg["models"]["sdxl"]["train"]["lr"] == 2.0e-8 and cfg["train"]["nodes"] == 2
    assert cfg["models"]["sdxl"]["train"]["beta_dpo"] == paper["models"]["sdxl"]["train"]["beta_dpo"]
    assert cfg["models"]["sd14"] == paper["models"]["sd14"] and "extends" not in cfg
    assert resolve_config({}) == resolve_config({"extends": "config/config.yaml"})
    demo = load_config(REPO / "config" / "tiny.yaml")
    assert "sd14" not in demo["models"]  # extends: null, nothing of the paper config leaks in
    chain = tmp_path / "chain.yaml"
    chain.write_text(f"extends: {overlay}\ntrain:\n  gpus: 4\n")
    assert (load_config(chain)["train"]["gpus"], load_config(chain)["train"]["nodes"]) == (4, 2)
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\nseed: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(loop)
    assert str(err.value) == f"{loop}: key 'extends': {loop} -> {loop} is a cycle"
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value) == f"{bad}: key 'extends': expected the path of a config file or null, got 3"


# ----------------------------------------------------------------------------- issue 13: numbers and duplicate keys

# (YAML overlay on config/config.yaml, the exact problem line)
NUMBER_FAULTS = [
    ("models:\n  sd15:\n    train:\n      beta_dpo: .nan\n",
     "key 'models.sd15.train.beta_dpo': must be a finite number, got nan"),
    ("models:\n  sdxl:\n    train:\n      lr: .inf\n", "key 'models.sdxl.train.lr': must be a finite number, got inf"),
    ("candidates:\n  sigma: -.inf\n", "key 'candidates.sigma': must be a finite number, got -inf"),
    ("candidates:\n  sigma: .NaN\n", "key 'candidates.sigma': must be a finite number, got nan"),
    ("qa:\n  llm:\n    timeout_s: .nan\n", "key 'qa.llm.timeout_s': must be a finite number, got nan"),
    ("train:\n  adam_betas: [0.9, .nan]\n", "key 'train.adam_betas[1]': must be a finite number, got nan"),
    ("pairs:\n  min_margin: .Inf\n", "key 'pairs.min_margin': must be a finite number, got inf"),
    ("candidates:\n  shard_size: 12.0\n", "key 'candidates.shard_size': expected integer, got float 12.0"),
    ("models:\n  sd14:\n    train:\n      steps: 20.0\n",
     "key 'models.sd14.train.steps': expected integer, got float 20.0"),
    ("models:\n  sd14:\n    generation:\n      steps: 20.0\n",
     "key 'models.sd14.generation.steps': expected integer, got float 20.0"),
    ("seed: 200.0\n", "key 'seed': expected integer, got float 200.0"),
    ("seed: true\n", "key 'seed': expected integer, got bool True"),
    ("prompts:\n  max_requests_per_category: 3.0\n",
     "key 'prompts.max_requests_per_category': expected integer or null, got float 3.0"),
    ("train:\n  gpus: 1.5\n", "key 'train.gpus': expected integer, got float 1.5"),
]


@pytest.mark.parametrize("overlay, problem", NUMBER_FAULTS,
                         ids=[f"{f[1].split(chr(39))[1]}={f[1].rsplit(' ', 1)[-1]}" for f in NUMBER_FAULTS])
def test_non_finite_and_non_integral_numbers_are_rejected(tmp_path, monkeypatch, overlay, problem):
    monkeypatch.chdir(REPO)
    path = tmp_path / "bad.yaml"
    path.write_text(overlay)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: invalid config (1 problem(s)):\n  - {problem}"


def test_every_non_finite_number_is_named_and_none_is_echoed_for_secret_keys(paper):
    cfg = copy.deepcopy(paper)
    cfg["models"]["sd15"]["train"]["beta_dpo"] = float("nan")
    cfg["eval"] = {"judge": {"confidence": float("-inf")}}
    cfg["prompts"]["llm"]["api_key_budget"] = float("inf")  # unknown and secret-looking: value hidden
    with pytest.raises(ConfigError) as err:
        check_config(cfg, source="c.yaml")
    lines = str(err.value).splitlines()
    assert lines[0] == "c.yaml: invalid config (4 problem(s)):"
    assert sorted(lines[1:4]) == [
        "  - key 'eval.judge.confidence': must be a finite number, got -inf",
        "  - key 'models.sd15.train.beta_dpo': must be a finite number, got nan",
        "  - key 'prompts.llm.api_key_budget': must be a finite number, got <value hidden>",
    ]
    assert lines[4].startswith("  - key 'prompts.llm.api_key_budget': secrets never go into config files")


def test_integral_numbers_stay_valid_where_a_number_is_asked(paper):
    cfg = copy.deepcopy(paper)
    cfg["models"]["sd15"]["train"]["beta_dpo"] = 5000  # an int is a number
    cfg["candidates"]["sigma"] = 0
    cfg["qa"]["llm"]["timeout_s"] = 30
    check_config(cfg)


DUPLICATE_KEYS = [
    ("a model listed twice", "models:\n  sd15:\n    resolution: 512\n  sdxl:\n    resolution: 1024\n"
     "  sd15:\n    resolution: 256\n", "key 'models.sd15' is defined twice (lines 2 and 6)"),
    ("a nested key", "models:\n  sdxl:\n    train:\n      lr: 1.0e-6\n      beta_dpo: 5000\n      lr: 2.0e-6\n",
     "key 'models.sdxl.train.lr' is defined twice (lines 4 and 6)"),
    ("a top-level key", "seed: 1\nrun_models: [sd14]\nseed: 2\n", "key 'seed' is defined twice (lines 1 and 3)"),
    ("in a list item", "downloads:\n  files:\n    - path: resources/a\n      url: https://x.org/a\n"
     "      path: resources/b\n", "key 'downloads.files[0].path' is defined twice (lines 3 and 5)"),
    ("in a flow mapping", "candidates: {sigma: 0.1, shard_size: 8, sigma: 0.2}\n",
     "key 'candidates.sigma' is defined twice (lines 1 and 1)"),
]


@pytest.mark.parametrize("what, text, problem", DUPLICATE_KEYS, ids=[d[0] for d in DUPLICATE_KEYS])
def test_duplicate_keys_are_rejected_naming_both_lines(tmp_path, what, text, problem):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: duplicate key(s) (1 problem(s)):\n  - {problem}; "
                              "YAML would silently keep only the last")


def test_duplicates_in_a_file_that_is_extended_are_rejected_too(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("extends: null\nseed: 1\nseed: 2\n")
    top = tmp_path / "top.yaml"
    top.write_text(f"extends: {base}\nrun_models: [sd14]\n")
    with pytest.raises(ConfigError, match=r"base.yaml: duplicate key\(s\) \(1 problem\(s\)\):\n  - key 'seed' is "
                       r"defined twice \(lines 2 and 3\)"):
        load_config(top)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    from agfsync.core.config import read_yaml_config

    path = tmp_path / "merge.yaml"
    path.write_text("common: &train {lr: 1.0e-6, steps: 10}\nsd15:\n  <<: *train\n  lr: 2.0e-6\nsdxl: *train\n")
    assert read_yaml_config(path) == {"common": {"lr": 1e-6, "steps": 10}, "sd15": {"lr": 2e-6, "steps": 10},
                                      "sdxl": {"lr": 1e-6, "steps": 10}}


def test_config_file_that_is_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    data = "seed: 200\n# caf\u00e9\nrun_models: [sd14]\n".encode("latin-1")
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}, line 2: not valid UTF-8 (byte {data.index(0xe9)} of the file: b'\\xe9\\nru')"


def test_workflow_rejects_duplicate_keys_in_its_configfile(tmp_path):
    """Snakemake loads --configfile itself and keeps the last of two equal keys; the workflow
    reads the files again with agfsync's loader (common.smk: check_config_files)."""
    from workflow_helpers import snakemake, workdir

    cwd = workdir(tmp_path / "w")
    text = (cwd / "config" / "tiny.yaml").read_text()
    assert "\n  sdxl:\n" in text
    dup = text.replace("\nqa:\n", "\nseed: 7\nqa:\n", 1)  # demo.yaml sets seed near the top already
    (cwd / "config" / "dup.yaml").write_text(dup)
    line = dup.splitlines().index("seed: 7") + 1
    first = dup.splitlines().index([entry for entry in dup.splitlines() if entry.startswith("seed:")][0]) + 1
    result = snakemake(cwd, "-n", "--configfile", "config/dup.yaml")
    assert result.returncode != 0
    assert (f"{cwd / 'config' / 'dup.yaml'}: duplicate key(s) (1 problem(s)):\n  - key 'seed' is defined twice "
            f"(lines {first} and {line}); YAML would silently keep only the last") in result.stdout + result.stderr
    assert not (cwd / "results").exists()


def test_a_lone_surrogate_escape_in_the_config_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    path = tmp_path / "bad.yaml"
    path.write_text('models:\n  sd15:\n    generation:\n      negative_prompt: "blurry \\ud800"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: invalid config (1 problem(s)):\n"
                              "  - key 'models.sd15.generation.negative_prompt': a string holds a lone surrogate escape (\\ud800-\\udfff), which is not valid Unicode")


def test_exponent_numbers_that_yaml_11_reads_as_strings_are_numbers(tmp_path, monkeypatch):
    """`lr: 1e-4` is a float in YAML 1.2 but a string to PyYAML and Snakemake's loader (YAML
    1.1 needs a dot and a signed exponent); a number-valued key reads it as the number, a
    string key keeps its text, and a word is still refused naming the key."""
    monkeypatch.chdir(REPO)
    assert yaml.safe_load("lr: 1e-4\n") == {"lr": "1e-4"}  # the loaders' reading
    path = tmp_path / "exp.yaml"
    path.write_text("models:\n  sd15:\n    train:\n      lr: 1e-4\n      beta_dpo: 2.5E3\n"
                    "candidates:\n  sigma: '1.0e-1'\nprompts:\n  llm:\n    model: 1e5\n")
    cfg = load_config(path)
    assert cfg["models"]["sd15"]["train"]["lr"] == 1e-4 and cfg["models"]["sd15"]["train"]["beta_dpo"] == 2500.0
    assert cfg["candidates"]["sigma"] == 0.1
    assert cfg["prompts"]["llm"]["model"] == "1e5"  # a model name is text
    path.write_text("models:\n  sd15:\n    train:\n      lr: 1e-4x\n")
    with pytest.raises(ConfigError, match=r"key 'models.sd15.train.lr': expected number, got str '1e-4x'"):
        load_config(path)
