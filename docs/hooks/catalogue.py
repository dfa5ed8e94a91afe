"""MkDocs hook: pages generated at build time from what the package itself knows.

* the model catalogue, one page per model card in ``cards/`` (parsed and validated by :mod:`zoo.registry`),
  and an index of the cards and of the registered architectures;
* an API page per model family (every module of ``zoo/models``), so a new family is documented as soon as
  its file exists;
* the command-line reference, from the ``zoo`` argument parser;
* the benchmark results (the tables of ``benchmarks/README.md``) and the figures the benchmark plots write to
  ``docs/assets/benchmarks/*.png``, when there are any.

No page is written to disk: the generated files exist only in the build, so nothing can go stale in git.
Registered in ``mkdocs.yml`` under ``hooks:``.
"""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from zoo.registry import (
    Card,
    EmbeddedSource,
    HubSource,
    UpstreamSource,
    builtin_cards_dir,
    get_architecture,
    list_architectures,
    parse_card,
)

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE_NAV = "Model catalogue"
MODELS_API_NAV = "Models"
TASK_TITLES = {
    "potential": "Interatomic potentials",
    "generative": "Generative models",
    "property": "Property models",
    "dynamics": "Dynamics models",
    "classification": "Classification models",
    "representation": "Representations",
}
BENCHMARK_PAGE = "benchmarks.md"
BENCHMARK_FIGURES = "assets/benchmarks"
RESULTS_MARKER = "<!-- benchmarks: results -->"
FIGURES_MARKER = "<!-- benchmarks: figures -->"
CLI_MARKER = "<!-- cli: reference -->"


# ----------------------------------------------------------------------------------------------- sources
def read_cards() -> list[Card]:
    """Every card shipped with zoo (``cards/*.md``), parsed and validated, sorted by name."""
    directory = builtin_cards_dir()
    paths = sorted(p for p in directory.glob("*.md") if p.name.lower() != "readme.md")
    return sorted((parse_card(p.read_text(encoding="utf-8"), str(p), p) for p in paths), key=lambda c: c.name)


def model_modules() -> list[str]:
    """The model-family modules of ``zoo/models`` (one API page each)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(ROOT / "zoo" / "models")]) if not m.name.startswith("_"))


# ------------------------------------------------------------------------------------------ model pages
def _family(architecture: str) -> str | None:
    try:
        return get_architecture(architecture).builder.__module__.rsplit(".", 1)[-1]
    except KeyError:
        return None


def _source_lines(card: Card) -> list[str]:
    source = card.spec.source
    if isinstance(source, HubSource):
        return [
            f"The zoo-format Hugging Face repo [`{source.repo_id}`](https://huggingface.co/{source.repo_id}) "
            f"pinned to commit `{source.revision}`; every file checked against its sha256 "
            f"({', '.join(f'`{name}`' for name in source.files)})."
        ]
    if isinstance(source, UpstreamSource):
        where = f"<{source.url}>" if source.kind == "url" else f"`{source.filename}` of the Hub repo `{source.repo_id}`"
        pinned = f"sha256 `{source.sha256}`" if source.sha256 else "its sha256 is printed at the first download"
        lines = [
            f"The upstream checkpoint {where} ({pinned}), converted once by the "
            f"[`{source.converter}` converter](../guides/converting.md); the converted checkpoint is cached, so "
            "later loads are offline."
        ]
        if source.gated:
            lines.append("The upstream repository is gated: request access, then log in or set `HF_TOKEN`.")
        return lines
    assert isinstance(source, EmbeddedSource)
    return ["Weights shipped inside the package: no download, works offline from a fresh install."]


def _demote_headings(markdown: str) -> str:
    """The card's prose one heading level down (its title dropped), code blocks untouched."""
    lines, out, fenced = markdown.strip().splitlines(), [], False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and index == 0 and line.startswith("# "):
            continue
        out.append("#" + line if not fenced and re.match(r"#{1,5} ", line) else line)
    return "\n".join(out).strip()


def _licence(card: Card) -> str:
    """The licence id, or for ``other`` the licence's name linked to its text."""
    name, link = card.front_matter.get("license_name"), card.front_matter.get("license_link")
    if card.license == "other" and name:
        return f"[{name}]({link})" if link else f"`{name}`"
    return f"`{card.license}`"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _load_snippet(card: Card) -> str:
    name = card.name
    if card.spec.task == "potential":
        body = (
            "import zoo\n"
            "from ase.build import bulk\n\n"
            f'model = zoo.load("{name}")  # the first call downloads (and converts); later ones read the cache\n'
            'atoms = bulk("Cu", "fcc", a=3.6)  # any structure with elements the model knows\n'
            "atoms.calc = zoo.calculator(model)\n"
            "print(atoms.get_potential_energy(), atoms.get_forces())"
        )
    elif card.spec.task == "generative":
        body = (
            "import zoo\n"
            "from zoo.metrics import molecule_metrics\n\n"
            f'model = zoo.load("{name}")\n'
            + (
                "molecules = model.sample(10, seed=0)  # ase.Atoms in Å\n"
                if not _is_conditional(card)
                else "import torch\n\nmolecules = model.sample(10, context=torch.zeros(10, 1), seed=0)"
                "  # normalised property\n"
            )
            + "print(molecule_metrics(molecules))"
        )
    else:
        body = f'import zoo\n\nmodel = zoo.load("{name}")\nprint(model.metadata)'
    return f"```python\n{body}\n```"


def _is_conditional(card: Card) -> bool:
    source = card.spec.source
    args = source.converter_args.get("args", {}) if isinstance(source, UpstreamSource) else {}
    return bool(args.get("context_node_nf")) or card.spec.architecture.endswith("conditional")


def model_page(card: Card) -> str:
    """The catalogue page of one card: what it is, where it comes from, how good it is, how to load it."""
    spec = card.spec
    family = _family(spec.architecture)
    arch = f"[`{spec.architecture}`](../reference/models/{family}.md)" if family else f"`{spec.architecture}`"
    rows = [
        ("Architecture", arch),
        ("Task", spec.task),
        ("Aliases", ", ".join(f"`{a}`" for a in spec.aliases) or "none"),
        ("Licence (weights)", _licence(card)),
        ("Paper", f"<{spec.paper}>" if spec.paper else "not given"),
        ("Training data", spec.training_data or "not given"),
        ("Card", f"`cards/{card.name}.md`"),
    ]
    parts = [f"# {card.name}", ""]
    if spec.deprecated is not None:
        parts += [
            '!!! warning "Deprecated"',
            f"    Use [`{spec.deprecated.replaced_by}`]({spec.deprecated.replaced_by}.md) instead. "
            f"{spec.deprecated.reason}".rstrip(),
            "",
        ]
    parts += ["| | |", "|---|---|", *(f"| {key} | {_cell(value)} |" for key, value in rows), ""]
    parts += ["## Source", "", *_source_lines(card), ""]
    if spec.intended_use or spec.limitations:
        parts += ["## Intended use and limitations", ""]
        parts += [f"**Intended use.** {spec.intended_use}", ""] if spec.intended_use else []
        parts += [f"**Limitations.** {spec.limitations}", ""] if spec.limitations else []
    parts += ["## Metrics", ""]
    if spec.metrics:
        parts += ["| metric | value | unit | dataset | split | measured by |", "|---|---:|---|---|---|---|"]
        parts += [
            f"| {_cell(m.name)} | {m.value:g} | {_cell(m.unit)} | {_cell(m.dataset)} | {_cell(m.split)} | {m.by} |"
            for m in spec.metrics
        ]
        commands = sorted({m.command for m in spec.metrics if m.command})
        if commands:
            parts += ["", "Measured with:", "", "```bash", *commands, "```"]
    else:
        parts += ["The card reports no metrics yet."]
    parts += [
        "",
        "## How to load",
        "",
        _load_snippet(card),
        "",
        "On the shell (fill the cache on a machine with internet, then use it offline; see "
        "[Installation](../installation.md#offline-and-air-gapped-clusters)):",
        "",
        f"```bash\nzoo info {card.name}\nzoo download {card.name}\n```",
        "",
        "## Licence and citation",
        "",
        f"Weights: {_licence(card)}. Code: zoo is MIT.",
    ]
    if spec.paper:
        parts += ["", f"Cite the paper that introduced the model: <{spec.paper}>."]
    parts += ["", "## The model card", "", _demote_headings(card.body), ""]
    return "\n".join(parts)


def catalogue_index(cards: list[Card]) -> str:
    """The catalogue's front page: every card, then every registered architecture."""
    parts = [
        "# Model catalogue",
        "",
        "Every pretrained checkpoint zoo knows, one page each, generated at build time from the model cards "
        "in `cards/` (the same cards `zoo list` and `zoo.list_models()` read, offline). Load any of them by "
        'name or alias: `zoo.load("<name>")`.',
        "",
        "| model | task | architecture | aliases | licence | weights from | metrics |",
        "|---|---|---|---|---|---|---:|",
    ]
    for card in cards:
        spec = card.spec
        kind = spec.source.kind
        aliases = ", ".join(f"`{a}`" for a in spec.aliases)
        parts.append(
            f"| [{card.name}]({card.name}.md) | {spec.task} | `{spec.architecture}` | {aliases} | "
            f"{_licence(card)} | {kind} | {len(spec.metrics)} |"
        )
    parts += [
        "",
        "## Architectures",
        "",
        "Registered with `@register_model`; build one with random weights with "
        '`zoo.create_model("<architecture>", **args)` (`zoo list --architectures`).',
        "",
        "| architecture | task | family | description |",
        "|---|---|---|---|",
    ]
    for name in list_architectures():
        arch = get_architecture(name)
        family = arch.builder.__module__.rsplit(".", 1)[-1]
        link = f"[{family}](../reference/models/{family}.md)"
        parts.append(f"| `{name}` | {arch.task or '-'} | {link} | {_cell(arch.description)} |")
    return "\n".join(parts) + "\n"


def model_api_page(module: str) -> str:
    return f"# zoo.models.{module}\n\n::: zoo.models.{module}\n"


def cli_reference() -> str:
    """``zoo --help`` and the help of every sub-command, as the parser prints them."""
    from zoo.cli.main import build_parser

    parser = build_parser()
    parts = ["```text", parser.format_help().rstrip(), "```"]
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():
        parts += ["", f"## zoo {name}", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ benchmarks
def benchmark_results() -> str:
    """The ``## Results`` section of ``benchmarks/README.md``, one heading level down."""
    text = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    start = text.find("\n## Results")
    if start < 0:
        return "The benchmark README has no results yet."
    section = text[start:].split("\n", 2)[2]
    return re.sub(r"^(#{2,5}) ", r"#\1 ", section.strip(), flags=re.MULTILINE)


def benchmark_figures(docs_dir: Path) -> str:
    figures = sorted((docs_dir / BENCHMARK_FIGURES).glob("*.png"))
    if not figures:
        return (
            "No figures in this build: the benchmark plots write them to `docs/assets/benchmarks/*.png`; "
            "the tables below are the measured numbers."
        )
    lines = []
    for path in figures:
        title = path.stem.replace("-", " ").replace("_", " ")
        lines += [f"![{title}]({BENCHMARK_FIGURES}/{path.name})", ""]
    return "\n".join(lines).strip()


# ------------------------------------------------------------------------------------------------ hooks
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Fill the generated parts of the navigation: the catalogue by task, the model-family API pages."""
    cards = read_cards()
    by_task: dict[str, list[dict[str, str]]] = {}
    for card in cards:
        by_task.setdefault(card.spec.task, []).append({card.name: f"models/{card.name}.md"})
    catalogue: list[Any] = ["models/index.md"]
    catalogue += [{TASK_TITLES.get(task, task): entries} for task, entries in sorted(by_task.items())]
    families = [{f"zoo.models.{m}": f"reference/models/{m}.md"} for m in model_modules()]
    for title, entries in ((CATALOGUE_NAV, catalogue), (MODELS_API_NAV, families)):
        if not _fill_nav(config.nav or [], title, entries):
            raise ValueError(f"mkdocs.yml nav has no section {title!r} for the generated pages")
    return config


def _fill_nav(nav: list[Any], title: str, entries: list[Any]) -> bool:
    """Replace the (empty) section ``title`` of the navigation by ``entries``; True when found."""
    for item in nav:
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if key == title:
                item[key] = entries
                return True
            if isinstance(value, list) and _fill_nav(value, title, entries):
                return True
    return False


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated pages to the build."""
    cards = read_cards()
    files.append(File.generated(config, "models/index.md", content=catalogue_index(cards)))
    for card in cards:
        files.append(File.generated(config, f"models/{card.name}.md", content=model_page(card)))
    for module in model_modules():
        files.append(File.generated(config, f"reference/models/{module}.md", content=model_api_page(module)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Fill the markers of hand-written pages with generated content."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if page.file.src_uri == BENCHMARK_PAGE:
        markdown = markdown.replace(FIGURES_MARKER, benchmark_figures(Path(config.docs_dir)))
        markdown = markdown.replace(RESULTS_MARKER, benchmark_results())
    return markdown
