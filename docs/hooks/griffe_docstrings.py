"""Griffe extension: zoo's docstrings (Google style with a few reStructuredText habits) as Markdown.

The source stays as it is (readable in a terminal, ``help()`` and doctests); the API pages get:

* grouped parameters whose names wrap onto a second line (``a, b,`` / ``c: ...``) joined onto one line;
* ``Example:`` read as the Google ``Examples:`` section, so doctests render as code, not as Markdown quotes;
* ``:math:`x``` as inline math and ``.. math::`` directives as display math (MathJax, see ``mkdocs.yml``);
* ``:func:`zoo.load``` (``:class:``, ``:meth:``, ``:mod:``, ``:data:``, ``:attr:``, ``:exc:``, ``:obj:``)
  as a link to the API page of the target when there is one, as code otherwise (never a build warning).

Registered in ``mkdocs.yml`` under the python handler's ``extensions``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_XREF_ROLE = re.compile(r":(func|class|meth|mod|data|attr|exc|obj):`(~?)([\w.]+)(\(\))?`")
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
# A grouped parameter entry whose names wrap onto the next line: "    a, b, c,\n        d, e: description".
_WRAPPED_NAMES = re.compile(r"^(\s+(?:\w+, )+\w+,)\n\s+(?=(?:\w+, )*\w+: )", re.MULTILINE)


def _display_math(lines: list[str]) -> list[str]:
    """``.. math::`` directives (one line, or an indented block) -> ``$$`` blocks at the same indentation."""
    out: list[str] = []
    index = 0
    while index < len(lines):
        match = _MATH_DIRECTIVE.match(lines[index])
        if match is None:
            out.append(lines[index])
            index += 1
            continue
        indent, inline = match.groups()
        body = [inline] if inline else []
        index += 1
        while index < len(lines) and (not lines[index].strip() or _indent(lines[index]) > len(indent)):
            body.append(lines[index].strip())
            index += 1
        body = [line for line in body if line]
        if any("&" in line for line in body) and not any("\\begin" in line for line in body):
            body = ["\\begin{aligned}", *body, "\\end{aligned}"]  # reST aligns at "&"; MathJax needs an environment
        indent = " " * (-(-len(indent) // 4) * 4)  # inside a reST list item (3 spaces): Markdown's 4
        out += ["", f"{indent}$$", *(f"{indent}{line}" for line in body), f"{indent}$$", ""]
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def markdown_docstring(text: str, module: str, owner: str | None) -> str:
    """The Markdown form of one docstring; ``module`` and ``owner`` (a class path) resolve short names."""

    def xref(match: re.Match[str]) -> str:
        role, short, target, call = match.groups()
        title = (target.rsplit(".", 1)[-1] if short else target) + (call or "")
        if target.startswith("zoo.") or target == "zoo":
            identifier = target
        elif role in ("meth", "attr") and owner is not None and "." not in target:
            identifier = f"{owner}.{target}"
        else:
            identifier = f"{module}.{target}"
        return f'<autoref identifier="{html.escape(identifier)}" optional><code>{html.escape(title)}</code></autoref>'

    text = _EXAMPLE.sub(r"\1Examples:", text)
    text = _WRAPPED_NAMES.sub(r"\1 ", text)
    text = "\n".join(_display_math(text.splitlines()))
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)
    return _XREF_ROLE.sub(xref, text)


class ReSTToMarkdown(griffe.Extension):
    """Rewrite every loaded docstring with :func:`markdown_docstring` before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        module = obj.module.path if not obj.is_module else obj.path
        parent = obj.parent
        owner = obj.path if obj.is_class else (parent.path if parent is not None and parent.is_class else None)
        obj.docstring.value = markdown_docstring(obj.docstring.value, module, owner)
