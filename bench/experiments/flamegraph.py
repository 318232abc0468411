"""Collapsed stacks (py-spy's `raw` format) -> a flame graph SVG, with no other tool.

py-spy writes one format per recording; recording twice (SVG and raw) would double its cost on
a 2-CPU machine. The raw file is the one kept (speedscope imports it as it is, and
bench/experiments/profile_request.py reads it for its summary); the SVG is drawn from it here:
one box per frame, as wide as its share of the samples, callers below callees, a tooltip on each
box.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape

WIDTH = 1200
ROW = 16
MARGIN_TOP = 40


@dataclass
class Node:
    name: str
    samples: int = 0
    children: dict[str, Node] = field(default_factory=dict)

    def child(self, name: str) -> Node:
        found = self.children.get(name)
        if found is None:
            found = self.children[name] = Node(name)
        return found


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """`frame;frame;frame count` lines -> (frames, count); blank or malformed lines skipped."""
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def build_tree(stacks: Iterable[tuple[list[str], int]]) -> Node:
    root = Node("all")
    for frames, count in stacks:
        root.samples += count
        node = root
        for frame in frames:
            node = node.child(frame)
            node.samples += count
    return root


def _colour(name: str) -> str:
    """Warm colours, stable per function name (the same frame has the same colour everywhere)."""
    digest = hashlib.md5(name.encode(), usedforsecurity=False).digest()
    return f"rgb({205 + digest[0] % 50},{digest[1] % 180},{digest[2] % 55})"


def _depth(node: Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def render_svg(root: Node, title: str, *, min_fraction: float = 0.001) -> str:
    """The tree as an SVG flame graph. Boxes under `min_fraction` of all samples are left out
    (they cannot be seen at this width and would only make the file large)."""
    total = max(root.samples, 1)
    height = MARGIN_TOP + _depth(root) * ROW + 10
    scale = WIDTH / total
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="#fafafa"/>',
        f'<text x="6" y="18" font-size="14">{escape(title)}</text>',
        f'<text x="6" y="33" fill="#555">{total} samples; hover a box for its function, '
        "samples and share</text>",
    ]

    def draw(node: Node, x: float, depth: int) -> None:
        w = node.samples * scale
        if node.samples < min_fraction * total:
            return
        y = height - 10 - (depth + 1) * ROW
        share = 100.0 * node.samples / total
        label = escape(node.name)
        out.append(
            f"<g><title>{label} ({node.samples} samples, {share:.2f}%)</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW - 1}" '
            f'fill="{_colour(node.name)}"/>'
        )
        chars = int(w / 7)
        if chars >= 4:
            text = node.name if len(node.name) <= chars else node.name[: chars - 2] + ".."
            out.append(f'<text x="{x + 3:.1f}" y="{y + ROW - 4}">{escape(text)}</text>')
        out.append("</g>")
        offset = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            draw(child, offset, depth + 1)
            offset += child.samples * scale

    draw(root, 0.0, 0)
    out.append("</svg>")
    return "\n".join(out) + "\n"
