"""The report's Compute section and the provenance lines on compute and hub commits (pure).

Compute: per model and stage, the jobs, wall time and GPU-hours from Snakemake's benchmark
files (agfsync.core.costs), then the totals per stage over all models. The files are no
rule's input: a report built before any job ran here (a dry run, `snakemake --report` on
another machine) says "not measured". Hub commits: agfsync.core.provenance.hub_commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from agfsync.core.costs import Costs, StageCost, hms


def _gpu_hours(stage: StageCost, known: bool) -> str:
    if not known:
        return "n/a"
    return f"{stage.gpu_hours:,.2f}" + ("" if stage.gpus else " (CPU)")


def _row(model: str, stage: StageCost, known: bool) -> str:
    gpus = stage.gpus if known else "n/a"
    return (f"<tr><td>{escape(model)}</td><td class=\"left\">{escape(stage.rule)}</td><td>{stage.jobs:,}</td>"
            f"<td>{gpus}</td><td>{hms(stage.wall_s)}</td><td>{_gpu_hours(stage, known)}</td></tr>")


def skipped_note(costs: Costs) -> str:
    if not costs.skipped:
        return ""
    items = "".join(f"<li><code>{escape(s)}</code></li>" for s in costs.skipped)
    return (f'<div class="note" id="compute-skipped">{len(costs.skipped)} benchmark file(s) could not be read '
            f'and are left out of these sums:<ul>{items}</ul></div>')


def compute_section(costs: Costs, *, gpus_known: bool = True) -> str:
    """The Compute section: a table per model and stage and the per-stage totals."""
    head = ('<h2 id="compute">Compute</h2><p class="note">Wall time of every job from Snakemake\'s benchmark files '
            '(<code>benchmarks/</code>, one per job); GPU-hours = wall time x the GPUs the job asked for '
            '(<code>resources: gpu</code>; training: <code>train.gpus</code> per node), reserved whether busy or '
            'not. Jobs rerun count once (the file is overwritten); files of jobs an earlier config ran still '
            'count.</p>')
    if not costs.measured:
        return f'{head}<p class="note" id="compute-none">Not measured: no benchmark files under ' \
               f'<code>benchmarks/</code> (no job has run here).</p>{skipped_note(costs)}'
    header = "<tr><th>model</th><th>stage (rule)</th><th>jobs</th><th>GPUs / job</th><th>wall time</th>" \
             "<th>GPU-hours</th></tr>"
    rows = "".join(_row(s.model or "(all models)", s, gpus_known) for s in costs.stages)
    totals = "".join(_row("all", s, gpus_known) for s in costs.per_rule())
    total = costs.total()
    gpu_total = f"{total['gpu_hours']:,.2f}" if gpus_known else "n/a"
    totals += (f"<tr><th>all</th><th class=\"left\">all stages</th><th>{total['jobs']:,}</th><th></th>"
               f"<th>{hms(total['wall_s'])}</th><th>{gpu_total}</th></tr>")
    unknown = "" if gpus_known else '<p class="note">GPU-hours: the GPUs per job were not given.</p>'
    return (f'{head}<table id="compute-table">{header}{rows}</table>'
            f'<h3>Per stage, all models</h3><table id="compute-totals">{header}{totals}</table>'
            f'{unknown}{skipped_note(costs)}')


def compute_text(costs: Costs, *, gpus_known: bool = True) -> str:
    """The per-stage totals in one line (the provenance paragraph)."""
    if not costs.measured:
        return "Compute: not measured (no benchmark files)."
    def one(s):
        return f"{s.rule} {s.jobs} jobs {hms(s.wall_s)}" + (f" {s.gpu_hours:.2f} GPU-h" if gpus_known else "")
    total = costs.total()
    gpu = f", {total['gpu_hours']:.2f} GPU-hours" if gpus_known else ""
    missing = f" ({len(costs.skipped)} unreadable benchmark files left out)" if costs.skipped else ""
    return (f"Compute: {total['jobs']} jobs, wall {hms(total['wall_s'])}{gpu}{missing}; per stage: "
            f"{'; '.join(one(s) for s in costs.per_rule())}.")


def hub_text(commits: Mapping[str, dict] | None) -> str:
    """The hub commit of every model and scorer the config loads (provenance.hub_commits)."""
    if commits is None:
        return ""
    if not commits:
        return '<p class="note" id="hub-commits">Hub models and scorers: none (local models only).</p>'
    items = []
    for repo, c in commits.items():
        asked = f"revision {c['revision']}" if c.get("revision") else "default branch"
        if not c.get("commit"):
            got = "commit unknown (no download marker here)"
        else:
            got = f"commit <code>{escape(c['commit'])}</code>"
            if c.get("marker_revision") != c.get("revision"):
                got += f" (the marker was fetched for {escape(str(c.get('marker_revision')))}: stale?)"
        items.append(f"<li><code>{escape(repo)}</code> ({escape(asked)}): {got}</li>")
    return (f'<div class="note" id="hub-commits">Hub models and scorers (commits from the download markers '
            f'resources/hub/&lt;owner&gt;--&lt;name&gt;.json):<ul>{"".join(items)}</ul></div>')
