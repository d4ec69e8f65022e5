"""Published numbers of the base models on our benchmarks, for the report's "published
beside ours" table and the `published` rows of results/metrics.tsv (pure; no torch).

A published number sits beside ours only where the benchmark and its protocol match: the
same metric and version (HPS v2.0 and v2.1 scales are not comparable), the same base
model (`models.<m>.pretrained`, the hub id the number was published for), and the whole
benchmark (all 3,200 HPS v2 prompts; `eval.hpsv2.per_style` takes a subset). Where a
published table has no row for our exact model (SDXL base 0.9 vs our base 1.0, MJHQ-30K's
SDXL 1.0 + refiner FID) nothing is shown; docs/method.md lists those numbers for reading.
"""

from __future__ import annotations

from dataclasses import dataclass

HPS_README = "tgxs002/HPSv2 README, benchmark table"


@dataclass(frozen=True)
class Published:
    metric: str                 # the result file's metric
    version: str                # the result's benchmark.version
    pretrained: str             # models.<m>.pretrained the number was published for
    prompts: int                # the whole benchmark: count.prompts of a matching result
    values: dict[str, float]    # "average" (the headline value) and per group (HPS v2 styles)
    source: str
    facet: str = "style"        # the groups' facet in results/metrics.tsv (`<metric>/<facet>=<group>`)


TABLE: tuple[Published, ...] = (
    Published("hpsv2", "v2.0", "CompVis/stable-diffusion-v1-4", 3200,
              {"average": 26.95, "anime": 27.26, "concept-art": 26.61, "paintings": 26.66, "photo": 27.27},
              f"{HPS_README} (HPS v2.0, SD v1.4)"),
    Published("hpsv2", "v2.1", "CompVis/stable-diffusion-v1-4", 3200, {"average": 25.35},
              f"{HPS_README} (HPS v2.1, SD v1.4)"),
)


def for_result(result: dict) -> Published | None:
    """The published entry whose benchmark, protocol and base model match `result`, if any."""
    for entry in TABLE:
        if (result.get("metric") == entry.metric and result.get("benchmark", {}).get("version") == entry.version
                and result.get("pretrained") == entry.pretrained
                and result.get("count", {}).get("prompts") == entry.prompts):
            return entry
    return None


def tsv_name(entry: Published, part: str) -> str:
    """The metric column of a published value in results/metrics.tsv (as our rows name it)."""
    return entry.metric if part == "average" else f"{entry.metric}/{entry.facet}={part}"


def beside(result: dict) -> list[tuple[str, float, float | None]]:
    """(part, published, ours on the base model) for each published value of `result`'s
    match: the headline ("average") first, then its groups in the published order."""
    entry = for_result(result)
    if entry is None:
        return []
    base = result["variants"]["base"]
    groups = base.get("details", {}).get("styles", {})
    return [(part, value, base["value"] if part == "average" else groups.get(part, {}).get("mean"))
            for part, value in entry.values.items()]
