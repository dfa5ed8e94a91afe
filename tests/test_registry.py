"""Architectures, cards, aliases, deprecations and the errors of the registry."""

from __future__ import annotations

import pytest
import torch
import yaml

import zoo
from zoo import registry
from zoo.registry import CardError, UnknownModelError, parse_card

SHA = "a" * 64
COMMIT = "b" * 40


def card_text(name="demo-tiny-test-potential", *, aliases=("demo",), source=None, extra=None, task="potential"):
    source = source or {
        "kind": "hub",
        "repo_id": f"org/{name}",
        "revision": COMMIT,
        "files": {"config.json": SHA, "model.safetensors": SHA},
    }
    spec = {"name": name, "aliases": list(aliases), "architecture": "test-pair-potential", "task": task}
    zoo_block = {**spec, "source": source, **(extra or {})}
    front = {"license": "mit", "library_name": "zoo", "tags": ["zoo"], "zoo": zoo_block}
    return f"---\n{yaml.safe_dump(front, sort_keys=False, default_flow_style=None)}---\n# {name}\n\nProse.\n"


def test_create_model_records_config():
    model = zoo.create_model("test-pair-potential", num_basis=4, hidden=3)
    assert model.zoo_config == {
        "architecture": "test-pair-potential",
        "model_args": {"num_basis": 4, "hidden": 3},
    }
    assert "test-pair-potential" in zoo.list_architectures()
    assert "test-pair-potential" in zoo.list_models(pretrained=False, task="potential")


def test_unknown_architecture_lists_close_matches():
    with pytest.raises(UnknownModelError, match="Did you mean: test-pair-potential"):
        zoo.create_model("test-pair-potentail")


def test_duplicate_registration_refused():
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model("test-pair-potential")(lambda: torch.nn.Linear(1, 1))


def test_cards_aliases_and_listing(cards_dir, caplog):
    (cards_dir / "demo-tiny-test-potential.md").write_text(card_text())
    (cards_dir / "other-prop.md").write_text(card_text("other-prop", aliases=("op",), task="property"))
    assert {"demo-tiny-test-potential", "other-prop"} <= set(zoo.list_models())
    assert "other-prop" in zoo.list_models(task="property")
    assert "demo-tiny-test-potential" not in zoo.list_models(task="property")
    assert zoo.list_models("demo*") == ["demo-tiny-test-potential"]
    assert zoo.list_models("op") == ["other-prop"]  # filters match aliases
    with caplog.at_level("INFO", logger="zoo.registry"):
        card = zoo.get_card("demo")
    assert card.name == "demo-tiny-test-potential"
    assert "demo -> demo-tiny-test-potential" in caplog.text
    assert card.text().startswith("---\nlicense: mit")
    assert parse_card(card.text()).spec == card.spec  # a card round-trips as a HF README


def test_unknown_model_name_suggests(cards_dir):
    (cards_dir / "demo-tiny-test-potential.md").write_text(card_text())
    with pytest.raises(UnknownModelError, match="Did you mean: demo-tiny-test-potential"):
        zoo.get_card("demo-tiny-test-potentail")
    with pytest.raises(UnknownModelError, match="zoo list"):
        zoo.load("completely-unrelated")


def test_deprecated_card_warns_with_replacement(cards_dir):
    extra = {"deprecated": {"replaced_by": "new-model", "reason": "retrained with more data"}}
    (cards_dir / "old-model.md").write_text(card_text("old-model", aliases=(), extra=extra))
    with pytest.warns(FutureWarning, match="use 'new-model' instead"):
        zoo.get_card("old-model")


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda t: t.replace("license: mit\n", ""), "field 'license': Field required"),
        (lambda t: t.replace("task: potential", "task: dancing"), "field 'zoo.task'"),
        (lambda t: t.replace(COMMIT, "main"), "40-hex commit sha"),
        (lambda t: t.replace(f"config.json: {SHA}", "config.json: abc"), "sha256 of 'config.json'"),
        (lambda t: t.replace("  aliases:", "  nickname: x\n  aliases:"), "field 'zoo.nickname'"),
        (lambda t: t.replace("kind: hub", "kind: ftp"), "field 'zoo.source'"),
        (lambda t: t.replace("---\n# ", "# "), "not closed"),
        (lambda t: t.replace("tags: [zoo]", "tags: [zoo"), "not valid YAML"),
        (lambda t: t[4:], "must start with '---'"),
    ],
)
def test_malformed_card_names_file_and_field(cards_dir, mutation, message):
    path = cards_dir / "broken.md"
    path.write_text(mutation(card_text()))
    with pytest.raises(CardError, match=message) as info:
        zoo.list_models()
    assert str(path) in str(info.value)


def test_alias_collision_refused(cards_dir):
    (cards_dir / "a-model.md").write_text(card_text("a-model", aliases=("same",)))
    (cards_dir / "b-model.md").write_text(card_text("b-model", aliases=("same",)))
    with pytest.raises(CardError, match="alias 'same' is already taken"):
        zoo.list_models()


def test_upstream_source_validation(cards_dir):
    source = {"kind": "url", "filename": "x.pt", "converter": "fairchem"}
    (cards_dir / "up.md").write_text(card_text("up", aliases=(), source=source))
    with pytest.raises(CardError, match="kind 'url' needs a url"):
        zoo.list_models()


def test_add_cards(tmp_path):
    directory = tmp_path / "mine"
    directory.mkdir()
    (directory / "mine-model.md").write_text(card_text("mine-model", aliases=()))
    try:
        assert zoo.add_cards(directory) == ["mine-model"]
        assert "mine-model" in zoo.list_models()
    finally:
        registry._EXTRA_CARD_DIRS.remove(directory.resolve())
        registry._load_cards_from.cache_clear()
    with pytest.raises(FileNotFoundError):
        zoo.add_cards(tmp_path / "missing")


def test_builtin_cards_parse():
    """Every card shipped with zoo validates and names a registered architecture."""
    for name in zoo.list_models():
        card = zoo.get_card(name)
        assert card.spec.architecture in zoo.list_architectures(), name


def test_embedded_checkpoints_carry_their_card():
    """An embedded checkpoint's README.md is its card, word for word (what `zoo push` would upload)."""
    from pathlib import Path

    root = Path(zoo.__file__).parent / "weights"
    cards = Path(__file__).resolve().parents[1] / "cards"
    for folder in sorted(p for p in root.iterdir() if (p / "config.json").is_file()):
        card = cards / f"{folder.name}.md"
        assert card.is_file(), f"embedded checkpoint {folder.name} has no card"
        assert (folder / "README.md").read_text() == card.read_text(), f"{folder}/README.md differs from {card}"
