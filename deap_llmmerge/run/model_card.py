"""A Hugging Face model card (``README.md``) for a saved merge, as ``mergekit-yaml`` writes one: YAML front
matter (``base_model``: every source, ``library_name``, ``tags``) and the recipe in words: the sources and
the base, the method and parameters of every part, the fitness and validation figures, the mergekit.yaml,
and the version that built it."""

from __future__ import annotations

import json

import yaml

__all__ = ["model_card"]


def _parts(plan: dict) -> list[str]:
    """One line per run of consecutive parts built alike."""
    lines, previous, first = [], None, None
    items = list(plan.items())
    for i, (part, step) in enumerate(items + [(None, None)]):
        described = None if step is None else json.dumps({k: v for k, v in step.items() if k != "source_part"},
                                                          sort_keys=True)
        if described != previous:
            if previous is not None:
                span = first if first == items[i - 1][0] else f"{first} .. {items[i - 1][0]}"
                lines.append(f"| {span} | `{previous}` |")
            previous, first = described, part
    return lines


def model_card(recipe: dict, mergekit_yaml: str, sources: list[str], version: str) -> str:
    """The card's text for the merge ``recipe`` describes (its ``plan``, ``fitness``, ``objectives``,
    ``validation``, ``base``, ``genome_family``)."""
    front = {"base_model": sources, "library_name": "transformers", "tags": ["merge", "deap-llmmerge", "mergekit"]}
    figures = ", ".join(f"{name} {value:.4g}" for name, value in zip(recipe.get("objectives") or [],
                                                                     recipe.get("fitness") or []) if value is not None)
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", "# A merge evolved by deap-llmmerge", "",
             f"Built by deap-llmmerge {version} (a genetic algorithm on DEAP) from {len(sources)} source models "
             f"(a `{recipe.get('genome_family', '?')}` genome), searched on the user's benchmarks.", "",
             "## Sources", ""]
    lines += [f"- source {k}: `{path}`" for k, path in enumerate(sources)]
    if recipe.get("base"):
        lines.append(f"- base model (task vectors are source - base): `{recipe['base']['path']}`")
    lines += ["", "## Recipe, part by part", "", "| parts | method and parameters |", "|---|---|"]
    lines += _parts(recipe["plan"])
    lines += ["", "## Figures", "", f"- fitness (the search's benchmarks): {figures or 'not recorded'}"]
    for name, values in (recipe.get("validation") or {}).items():
        lines.append(f"- validation {name}: " + ", ".join(f"{metric} {value:.4g}" for metric, value in values.items()))
    lines += ["", "## mergekit", "", "The same merge as a mergekit config (its `# NOTE` lines say where mergekit "
              "builds otherwise):", "", "```yaml", mergekit_yaml.strip(), "```", ""]
    return "\n".join(lines)
