# Downloads: benchmark data and weights (config downloads.files) and hub models (the
# config's model ids that are not local paths). Local rules: they run where Snakemake
# runs (the login node, which has internet), never as cluster jobs. Everything else runs
# with HF_HUB_OFFLINE=1. `snakemake downloads` fetches all of them ahead of a run.

import re

from agfsync.core.downloads import hub_marker, marker_name, repo_of

localrules:
    downloads,


if DOWNLOAD_FILES:

    localrules:
        download_file,

    rule download_file:
        """One file of downloads.files (benchmark data, scorer weights), checked against its sha256 where pinned."""
        output:
            "{download}",
        wildcard_constraints:
            download="|".join(re.escape(path) for path in sorted(DOWNLOAD_FILES)),
        log:
            layout.LOGS["download_file"],
        params:
            url=lambda w: DOWNLOAD_FILES[w.download]["url"],
            sha256=lambda w: DOWNLOAD_FILES[w.download]["sha256"],
        retries: 2
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/download_file.py"


if HUB_REPOS:

    localrules:
        download_hub,

    rule download_hub:
        """A snapshot of one hub repository (a diffusion model or a scorer) at its revision."""
        output:
            "resources/hub/{repo}.json",
        wildcard_constraints:
            repo="|".join(re.escape(marker_name(repo)) for repo in HUB_REPOS),
        log:
            layout.LOGS["download_hub"],
        params:
            repo_id=lambda w: repo_of(w.repo),
            revision=lambda w: HUB_REPOS[repo_of(w.repo)],
            ignore=config["downloads"]["hub_ignore"],
        retries: 2
        conda:
            "../../envs/agfsync.yaml"
        script:
            "../scripts/download_hub.py"


rule downloads:
    """Every download the config needs; run it once where there is internet."""
    input:
        sorted(DOWNLOAD_FILES) + [hub_marker(repo) for repo in HUB_REPOS],
