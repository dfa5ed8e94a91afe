"""Registry of architectures (``@register_model``) and of pretrained checkpoints (model cards).

Two tables live here:

* **architectures** — builders registered with :func:`register_model`; :func:`create_model` calls one and
  records its arguments on the module (``model.zoo_config``) so that a checkpoint's ``config.json``
  round-trips exactly.
* **pretrained entries** — read from model cards, ``cards/<name>.md``: Hugging Face style YAML front matter
  (``license``, ``library_name: zoo``, ``tags``, ...) with a ``zoo:`` block validated by :class:`CardSpec`,
  followed by prose. Cards ship inside the wheel, so :func:`list_models` works offline.

Example:
    >>> import zoo
    >>> "equiformer" in " ".join(zoo.list_architectures()) or True
    True
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

logger = logging.getLogger(__name__)

__all__ = [
    "Card",
    "CardError",
    "CardSpec",
    "UnknownModelError",
    "add_cards",
    "create_model",
    "get_card",
    "list_architectures",
    "list_models",
    "list_pretrained",
    "register_model",
]

TASKS = ("potential", "property", "dynamics", "generative", "classification", "representation")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")


class UnknownModelError(KeyError):
    """A model or architecture name that is neither registered, an alias, nor a local directory."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class CardError(ValueError):
    """A model card that cannot be parsed or validated; the message names the file and the field."""


# --------------------------------------------------------------------------------------------- architectures
@dataclass(frozen=True)
class Architecture:
    """A registered architecture: ``builder(**model_args) -> nn.Module``."""

    name: str
    builder: Callable[..., torch.nn.Module]
    task: str | None
    description: str


_ARCHITECTURES: dict[str, Architecture] = {}


def register_model(
    name: str, *, task: str | None = None
) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Register a model builder (a function or an ``nn.Module`` subclass) under ``name``.

    The builder's keyword arguments are the model's configuration: :func:`create_model` records them in
    ``model.zoo_config`` and :func:`zoo.save_pretrained` writes them to ``config.json``.

    Example:
        >>> import torch
        >>> from zoo.registry import register_model, create_model, _ARCHITECTURES
        >>> @register_model("doc-linear")
        ... def doc_linear(width: int = 4) -> torch.nn.Module:
        ...     return torch.nn.Linear(width, width)
        >>> create_model("doc-linear", width=2).zoo_config
        {'architecture': 'doc-linear', 'model_args': {'width': 2}}
        >>> del _ARCHITECTURES["doc-linear"]
    """
    if not _NAME.match(name.replace("_", "-")):
        raise ValueError(f"architecture name {name!r} must be lower case letters, digits, '-', '_' or '.'")
    if task is not None and task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {TASKS}")

    def decorator(builder: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        existing = _ARCHITECTURES.get(name)
        if existing is not None and existing.builder is not builder:
            raise ValueError(
                f"architecture {name!r} is already registered by {existing.builder.__module__}."
                f"{existing.builder.__qualname__}; pick another name"
            )
        doc = (builder.__doc__ or "").strip().splitlines()
        _ARCHITECTURES[name] = Architecture(name, builder, task, doc[0] if doc else "")
        return builder

    return decorator


def _import_model_families() -> None:
    """Import ``zoo.models`` so every family registers itself (idempotent)."""
    import zoo.models  # noqa: F401


def list_architectures(filter: str | None = None) -> list[str]:
    """Names of the registered architectures, sorted; ``filter`` is a shell-style pattern."""
    _import_model_families()
    names = sorted(_ARCHITECTURES)
    return [n for n in names if filter is None or fnmatch.fnmatch(n, filter)]


def get_architecture(name: str) -> Architecture:
    """The registered architecture ``name``; unknown names raise with the closest matches."""
    _import_model_families()
    if name not in _ARCHITECTURES:
        raise UnknownModelError(_unknown_message("architecture", name, list(_ARCHITECTURES)))
    return _ARCHITECTURES[name]


def create_model(architecture: str, **model_args: Any) -> torch.nn.Module:
    """Build a registered architecture with random weights.

    Args:
        architecture: a name from :func:`list_architectures`.
        **model_args: the builder's keyword arguments (its configuration), recorded in ``model.zoo_config``.

    Returns:
        The module, with ``zoo_config = {"architecture": ..., "model_args": ...}`` attached.
    """
    arch = get_architecture(architecture)
    model = arch.builder(**model_args)
    model.zoo_config = {"architecture": architecture, "model_args": dict(model_args)}
    if not hasattr(model, "metadata"):
        model.metadata = {}
    return model


# -------------------------------------------------------------------------------------------------- cards
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubSource(_Strict):
    """Weights in zoo format in a Hugging Face repo, pinned to a commit, each file with its sha256."""

    kind: Literal["hub"]
    repo_id: str
    revision: str
    files: dict[str, str] = Field(description="filename -> sha256 (hex)")

    @field_validator("revision")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if not _COMMIT.match(value):
            raise ValueError(f"revision must be a 40-hex commit sha (got {value!r}): pin the exact commit")
        return value

    @field_validator("files")
    @classmethod
    def _hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for filename, sha in value.items():
            if not _SHA256.match(sha):
                raise ValueError(f"sha256 of {filename!r} must be 64 lower-case hex digits (got {sha!r})")
        if "config.json" not in value or "model.safetensors" not in value:
            raise ValueError("a zoo-format repo needs config.json and model.safetensors in files")
        return value


class UpstreamSource(_Strict):
    """One upstream checkpoint file (a URL, or a file in a Hub repo) converted by a named converter."""

    kind: Literal["url", "hub-file"]
    url: str | None = None
    repo_id: str | None = None
    filename: str
    revision: str | None = None
    sha256: str | None = Field(None, description="null until first download: zoo prints it then")
    converter: str
    converter_args: dict[str, Any] = Field(default_factory=dict)
    gated: bool = False

    @field_validator("sha256")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value):
            raise ValueError(f"sha256 must be 64 lower-case hex digits (got {value!r})")
        return value

    def model_post_init(self, __context: Any) -> None:
        if self.kind == "url" and not self.url:
            raise ValueError("kind 'url' needs a url")
        if self.kind == "hub-file" and not self.repo_id:
            raise ValueError("kind 'hub-file' needs a repo_id")


class EmbeddedSource(_Strict):
    """A zoo checkpoint directory shipped inside the package (``zoo/weights/<path>``)."""

    kind: Literal["embedded"]
    path: str


Source = Annotated[HubSource | UpstreamSource | EmbeddedSource, Field(discriminator="kind")]


class Deprecation(_Strict):
    """A card kept for old scripts: loading it warns and names the replacement."""

    replaced_by: str
    reason: str = ""


class Metric(_Strict):
    """One reported figure: ``value`` of ``name`` on ``dataset`` measured ``by`` upstream or zoo."""

    name: str
    value: float
    unit: str = ""
    dataset: str = ""
    split: str = ""
    by: Literal["upstream", "zoo"]
    command: str | None = None


class CardSpec(_Strict):
    """The ``zoo:`` block of a model card's front matter."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    architecture: str
    task: str
    source: Source
    paper: str | None = None
    training_data: str | None = None
    metrics: list[Metric] = Field(default_factory=list)
    intended_use: str | None = None
    limitations: str | None = None
    deprecated: Deprecation | None = None

    @field_validator("name")
    @classmethod
    def _canonical(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"name {value!r} must be lower case letters, digits, '.' and '-'")
        return value

    @field_validator("task")
    @classmethod
    def _task(cls, value: str) -> str:
        if value not in TASKS:
            raise ValueError(f"task {value!r} is not one of {', '.join(TASKS)}")
        return value


class CardFrontMatter(BaseModel):
    """The whole front matter: Hugging Face model-card keys (kept as they are) plus the ``zoo`` block."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    license: str
    library_name: Literal["zoo"] = "zoo"
    tags: list[str] = Field(default_factory=list)
    zoo: CardSpec


@dataclass(frozen=True)
class Card:
    """A parsed model card: the validated spec, the raw front matter, the prose and the file it came from."""

    spec: CardSpec
    license: str
    front_matter: dict[str, Any]
    body: str
    path: Path | None

    @property
    def name(self) -> str:
        return self.spec.name

    def text(self) -> str:
        """The card as a Hugging Face ``README.md``: YAML front matter and prose."""
        header = yaml.safe_dump(self.front_matter, sort_keys=False, allow_unicode=True)
        return f"---\n{header}---\n{self.body}"


def split_front_matter(text: str, origin: str) -> tuple[dict[str, Any], str]:
    """Split ``---``-delimited YAML front matter from a markdown text; ``origin`` names it in errors."""
    if not text.startswith("---"):
        raise CardError(f"{origin}: a model card must start with '---' YAML front matter")
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        raise CardError(f"{origin}: front matter is not closed by a '---' line")
    try:
        meta = yaml.safe_load(parts[0][3:])
    except yaml.YAMLError as exc:
        raise CardError(f"{origin}: front matter is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise CardError(f"{origin}: front matter must be a YAML mapping")
    return meta, parts[1].lstrip("-").lstrip("\n")


def parse_card(text: str, origin: str = "<card>", path: Path | None = None) -> Card:
    """Parse and validate a model card; errors name ``origin`` and the offending field."""
    meta, body = split_front_matter(text, origin)
    try:
        front = CardFrontMatter.model_validate(meta)
    except ValidationError as exc:
        problems = "; ".join(f"field '{'.'.join(str(p) for p in err['loc'])}': {err['msg']}" for err in exc.errors())
        raise CardError(f"{origin}: invalid model card: {problems}") from None
    return Card(spec=front.zoo, license=front.license, front_matter=meta, body=body, path=path)


def builtin_cards_dir() -> Path:
    """Directory of the cards shipped with zoo (``zoo/_cards`` in a wheel, ``cards/`` in a source tree)."""
    package = Path(__file__).resolve().parent
    installed = package / "_cards"
    return installed if installed.is_dir() else package.parent / "cards"


_EXTRA_CARD_DIRS: list[Path] = []


def add_cards(directory: str | os.PathLike[str]) -> list[str]:
    """Register every ``*.md`` card of ``directory`` (e.g. your own checkpoints); returns their names.

    Directories listed in the ``ZOO_CARDS_PATH`` environment variable (``os.pathsep``-separated) are added
    at first use too.
    """
    path = Path(directory).resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"card directory {path} does not exist")
    if path not in _EXTRA_CARD_DIRS:
        _EXTRA_CARD_DIRS.append(path)
    _load_cards_from.cache_clear()
    return sorted(card.name for card in _read_dir(path))


def _card_dirs() -> tuple[Path, ...]:
    env = [Path(p) for p in os.environ.get("ZOO_CARDS_PATH", "").split(os.pathsep) if p]
    return (builtin_cards_dir(), *env, *_EXTRA_CARD_DIRS)


def _read_dir(directory: Path) -> list[Card]:
    if not directory.is_dir():
        return []
    return [
        parse_card(p.read_text(encoding="utf-8"), str(p), p)
        for p in sorted(directory.glob("*.md"))
        if p.name.lower() != "readme.md"
    ]


@cache
def _load_cards_from(dirs: tuple[Path, ...]) -> tuple[dict[str, Card], dict[str, str]]:
    cards: dict[str, Card] = {}
    aliases: dict[str, str] = {}
    for directory in dirs:
        for card in _read_dir(directory):
            if card.name in cards:
                raise CardError(f"{card.path}: card name {card.name!r} already defined by {cards[card.name].path}")
            cards[card.name] = card
    for card in cards.values():
        for alias in card.spec.aliases:
            if alias in cards or aliases.get(alias, card.name) != card.name:
                raise CardError(f"{card.path}: alias {alias!r} is already taken")
            aliases[alias] = card.name
    return cards, aliases


def _load_cards() -> tuple[dict[str, Card], dict[str, str]]:
    return _load_cards_from(_card_dirs())


def _unknown_message(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} See `zoo list` (or zoo.list_models()) for what is available."


def get_card(name: str) -> Card:
    """The card of a pretrained model by canonical name or alias (aliases and deprecations are logged)."""
    cards, aliases = _load_cards()
    canonical = aliases.get(name, name)
    if canonical not in cards:
        raise UnknownModelError(_unknown_message("model", name, [*cards, *aliases]))
    if canonical != name:
        logger.info("%s -> %s", name, canonical)
    card = cards[canonical]
    if card.spec.deprecated is not None:
        dep = card.spec.deprecated
        warnings.warn(
            f"model {canonical!r} is deprecated: use {dep.replaced_by!r} instead. {dep.reason}".rstrip(),
            FutureWarning,
            stacklevel=2,
        )
    return card


def list_models(filter: str | None = None, task: str | None = None, pretrained: bool = True) -> list[str]:
    """Names of pretrained models (from the cards, offline) or, with ``pretrained=False``, architectures.

    Args:
        filter: shell-style pattern on the name or an alias, e.g. ``"equiformer*"``.
        task: keep only this task (``potential``, ``property``, ``dynamics``, ``generative``, ...).
        pretrained: ``True`` lists checkpoints, ``False`` lists architectures.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    if not pretrained:
        names = list_architectures(filter)
        return [n for n in names if task is None or _ARCHITECTURES[n].task == task]
    cards, _ = _load_cards()
    out = []
    for name, card in sorted(cards.items()):
        if task is not None and card.spec.task != task:
            continue
        if filter is not None and not any(fnmatch.fnmatch(n, filter) for n in (name, *card.spec.aliases)):
            continue
        out.append(name)
    return out


def list_pretrained(filter: str | None = None, task: str | None = None) -> list[str]:
    """Same as :func:`list_models` with ``pretrained=True``."""
    return list_models(filter, task=task, pretrained=True)
