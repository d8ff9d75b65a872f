"""A flame graph (SVG) from collapsed stacks ("root;...;leaf count" lines), as Brendan Gregg's flamegraph.pl draws.

Self-contained: no JavaScript, each frame's tooltip (``<title>``) gives its samples and share; widths are
proportional to samples, root at the bottom.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape

WIDTH_PX = 1200
FRAME_PX = 16
MIN_WIDTH_PX = 0.3  # narrower frames are left out (they cannot be seen; their samples still count above)


@dataclass
class _Node:
    name: str
    samples: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(stacks: Mapping[tuple[str, ...], int]) -> _Node:
    root = _Node("all")
    for frames, count in stacks.items():
        root.samples += count
        node = root
        for frame in frames:
            node = node.children.setdefault(frame, _Node(frame))
            node.samples += count
    return root


def _depth(node: _Node) -> int:
    return 1 + max((_depth(child) for child in node.children.values()), default=0)


def _colour(name: str) -> str:
    """A warm colour that depends only on the frame's name: the same function looks the same everywhere."""
    digest = hashlib.blake2b(name.encode(), digest_size=3).digest()
    return f"rgb({205 + digest[0] % 50},{80 + digest[1] % 150},{digest[2] % 60})"


def render(stacks: Mapping[tuple[str, ...], int], title: str) -> str:
    """The SVG text of ``stacks`` (frames root first -> samples)."""
    root = _tree(stacks)
    total = max(root.samples, 1)
    depth = _depth(root)
    top_px = 2 * FRAME_PX
    height_px = top_px + depth * FRAME_PX + FRAME_PX
    scale = WIDTH_PX / total
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height_px}" '
        f'font-family="monospace" font-size="11">',
        '<rect width="100%" height="100%" fill="#f8f8f8"/>',
        f'<text x="{WIDTH_PX / 2}" y="{FRAME_PX}" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    # depth-first, each child placed after its older siblings; the widest first for a stable picture
    pending = [(root, 0.0, 0)]
    while pending:
        node, x, level = pending.pop()
        width = node.samples * scale
        if width < MIN_WIDTH_PX:
            continue
        y = height_px - FRAME_PX * (level + 2)
        share = 100 * node.samples / total
        label = escape(node.name)
        parts.append(
            f"<g><title>{label} ({node.samples} samples, {share:.2f}%)</title>"
            f'<rect x="{x:.2f}" y="{y}" width="{width:.2f}" height="{FRAME_PX - 1}" fill="{_colour(node.name)}"/>'
        )
        characters = int(width / 7)  # about 7 px per character at 11 px monospace
        if characters >= 3:
            text = node.name if len(node.name) <= characters else node.name[: characters - 2] + ".."
            parts.append(f'<text x="{x + 2:.2f}" y="{y + FRAME_PX - 4}">{escape(text)}</text>')
        parts.append("</g>")
        child_x = x
        for child in sorted(node.children.values(), key=lambda c: -c.samples):
            pending.append((child, child_x, level + 1))
            child_x += child.samples * scale
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
