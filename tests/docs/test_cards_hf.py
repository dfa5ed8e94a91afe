"""Every model card in ``cards/`` is also a valid Hugging Face model card.

The Hub verifies ``license``, ``datasets`` and ``model-index`` when a README is pushed and refuses the commit
when they are malformed; ``zoo push`` and converted checkpoints carry the card as their ``README.md``, so a
card must pass these checks before it ships: the keys the Hub reads are present and well-formed, the licence
is one of the Hub's ids (or ``other`` with ``license_name`` and ``license_link``), and ``model-index`` holds
exactly the metrics of the card's ``zoo:`` block.
"""

from __future__ import annotations

import re
from numbers import Real
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import HFValidationError, validate_repo_id

from zoo.registry import builtin_cards_dir, parse_card, split_front_matter

# https://huggingface.co/docs/hub/repositories-licenses (the "License identifier" column).
HF_LICENSES = frozenset(
    """
    apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc
    cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0
    cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0
    cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
    eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c
    ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib
    pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2
    llama3.3 llama4 gemma unknown other
    """.split()
)
REQUIRED = ("license", "library_name", "tags", "datasets")
LICENSE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
CARDS = sorted(p for p in builtin_cards_dir().glob("*.md") if p.name.lower() != "readme.md")


def _hub_id(value: Any) -> str | None:
    """``None`` when ``value`` is a well-formed Hub repo id (``name`` or ``org/name``), else the problem."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    try:
        validate_repo_id(value)
    except HFValidationError as exc:
        return str(exc).splitlines()[0]
    return None


def _model_index_problems(front: dict[str, Any], name: str) -> list[str]:
    index = front["model-index"]
    if not isinstance(index, list) or len(index) != 1 or not isinstance(index[0], dict):
        return ["model-index must be a list with one entry (this model)"]
    entry = index[0]
    problems = [] if entry.get("name") == name else [f"model-index[0].name must be the card's name {name!r}"]
    results = entry.get("results")
    if not isinstance(results, list) or not results:
        return [*problems, "model-index[0].results must be a non-empty list"]
    for i, result in enumerate(results):
        where = f"model-index[0].results[{i}]"
        task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
        if not isinstance(task, dict) or not isinstance(task.get("type"), str):
            problems.append(f"{where}.task.type must be a string")
        if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("name", "type")):
            problems.append(f"{where}.dataset needs name and type (strings)")
        if not isinstance(metrics, list) or not metrics:
            problems.append(f"{where}.metrics must be a non-empty list")
            continue
        for j, metric in enumerate(metrics):
            value = metric.get("value") if isinstance(metric, dict) else None
            if not isinstance(metric, dict) or not isinstance(metric.get("type"), str):
                problems.append(f"{where}.metrics[{j}].type must be a string")
            if isinstance(value, bool) or not isinstance(value, Real | str):
                problems.append(f"{where}.metrics[{j}].value must be a number")
            if isinstance(metric, dict) and metric.get("verified"):
                problems.append(f"{where}.metrics[{j}].verified: only the Hub's own evaluations are verified")
    return problems


def hf_problems(front: dict[str, Any]) -> list[str]:
    """Everything in a card's front matter the Hugging Face Hub would refuse or misread."""
    name = front["zoo"]["name"]
    problems = [f"missing {key!r}" for key in REQUIRED if key not in front]
    if front.get("library_name") != "zoo":
        problems.append("library_name must be 'zoo'")
    licence = front.get("license")
    if licence not in HF_LICENSES:
        problems.append(f"license {licence!r} is not a Hub licence id (use 'other' with license_name/license_link)")
    if licence == "other":
        if not LICENSE_NAME.match(str(front.get("license_name", ""))):
            problems.append("license: other needs license_name (lower case, digits, '-', '.')")
        link = str(front.get("license_link", ""))
        if not (link.startswith(("https://", "http://")) or link == "LICENSE" or link.startswith("LICENSE.")):
            problems.append("license: other needs license_link (a URL, or LICENSE in the repo)")
    for key in ("tags", "datasets"):
        values = front.get(key)
        if key in front and (not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values)):
            problems.append(f"{key} must be a non-empty list of strings")
    problems += [f"datasets: {why}" for why in map(_hub_id, front.get("datasets") or []) if why]
    if "base_model" in front:
        bases = front["base_model"] if isinstance(front["base_model"], list) else [front["base_model"]]
        problems += [f"base_model: {why} (it must name a model on the Hub)" for why in map(_hub_id, bases) if why]
    metrics = front["zoo"].get("metrics") or []
    if metrics and "model-index" not in front:
        problems.append("the card has metrics: report them in model-index too (the Hub shows those)")
    if "model-index" in front:
        problems += _model_index_problems(front, name)
    return problems


def test_there_are_cards():
    assert CARDS, f"no cards in {builtin_cards_dir()}"


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.stem)
def test_card_is_a_valid_hugging_face_model_card(path: Path):
    text = path.read_text(encoding="utf-8")
    front, _ = split_front_matter(text, str(path))
    problems = hf_problems(front)
    assert not problems, f"{path}:\n  " + "\n  ".join(problems)
    card = ModelCard(text, ignore_metadata_errors=False)  # huggingface_hub's own parser and checks
    assert card.data.library_name == "zoo" and card.data.license == front["license"]
    if "model-index" in front:
        model_name, results = model_index_to_eval_results(front["model-index"])
        assert model_name == front["zoo"]["name"]
        zoo_metrics = {float(m["value"]) for m in front["zoo"].get("metrics") or []}
        listed = {float(r.metric_value) for r in results}
        assert listed <= zoo_metrics, f"model-index values {sorted(listed - zoo_metrics)} are not in zoo.metrics"


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.stem)
def test_card_written_as_a_readme_stays_valid(path: Path):
    """What save_pretrained and the converters write as README.md (``Card.text()``) keeps the Hub keys."""
    card = parse_card(path.read_text(encoding="utf-8"), str(path), path)
    front, _ = split_front_matter(card.text(), "README.md")
    assert front == yaml.safe_load(yaml.safe_dump(card.front_matter)) and not hf_problems(front)


def test_the_checks_catch_what_the_hub_refuses():
    good = {"license": "mit", "library_name": "zoo", "tags": ["zoo"], "datasets": ["QM9"], "zoo": {"name": "x"}}
    assert hf_problems(good) == []
    assert hf_problems({**good, "license": "MIT License"})
    assert hf_problems({**good, "license": "other"})  # no license_name / license_link
    assert hf_problems({**good, "datasets": ["OC20 S2EF All+MD"]})  # prose, not a dataset id
    assert hf_problems({**good, "base_model": "https://example.org/model.pt"})
    assert hf_problems({**good, "zoo": {"name": "x", "metrics": [{"name": "mae", "value": 1.0}]}})
    broken_index = [{"name": "x", "results": [{"task": {}, "dataset": {"name": "QM9"}, "metrics": []}]}]
    assert len(hf_problems({**good, "model-index": broken_index})) == 3
