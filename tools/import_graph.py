"""Print cassle's package import graph as a Mermaid flowchart, read from the code with grimp.

    python tools/import_graph.py            # the diagram docs/architecture.md embeds (a test keeps them equal)

Nodes are the packages of the three tiers, read from the import-linter contracts in pyproject.toml (the `tiers`
layers: applications on top, foundation at the bottom, domain between; the applications are the layers of the
`applications` contract). An edge A --> B says that some module of A imports some module of B. Edges that a longer
path already implies are left out (the transitive reduction), so the picture shows the layering rather than every
import.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import grimp

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _layer_modules(layers: list[str], prefix: str = "") -> tuple[str, ...]:
    """The modules of import-linter layers ("a | b" and "a : b" hold siblings), with `prefix` (a container)."""
    return tuple(prefix + name.strip() for layer in layers for name in re.split(r"[|:]", layer))


def tiers() -> dict[str, tuple[str, ...]]:
    """{tier: its packages, top to bottom}, from the contracts."""
    contracts = {c["id"]: c for c in tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]}
    layers = contracts["tiers"]["layers"]
    applications = contracts["applications"]
    container = applications["containers"][0]
    assert layers[0] == container, f"the top tier is {layers[0]}, the applications contract's container {container}"
    return {"applications": _layer_modules(applications["layers"], container + "."),
            "domain": _layer_modules(layers[1:-1]), "foundation": _layer_modules(layers[-1:])}


def package_of(module: str, packages: list[str]) -> str | None:
    """The most specific package of `packages` that holds `module`."""
    holders = [p for p in packages if module == p or module.startswith(p + ".")]
    return max(holders, key=len) if holders else None


def package_graph() -> dict[str, set[str]]:
    """{package: packages it imports directly}, from the code."""
    packages = [p for members in tiers().values() for p in members]
    graph = grimp.build_graph("cassle", cache_dir=None)
    edges: dict[str, set[str]] = {p: set() for p in packages}
    for module in graph.modules:
        source = package_of(module, packages)
        for imported in graph.find_modules_directly_imported_by(module):
            target = package_of(imported, packages)
            if source and target and source != target:
                edges[source].add(target)
    return edges


def transitive_reduction(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The edges no longer path implies (the graph is acyclic: import-linter's layers contract holds it)."""
    def reachable(start: str, skip: str) -> set[str]:
        seen, stack = set(), [n for n in edges[start] if n != skip]
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(edges[node])
        return seen

    return {a: {b for b in targets if b not in reachable(a, b)} for a, targets in edges.items()}


def mermaid(edges: dict[str, set[str]]) -> str:
    """The Mermaid flowchart: one subgraph per tier, nodes named without the `cassle.` prefix."""
    def node(package: str) -> str:
        return package.removeprefix("cassle.").replace(".", "_")

    lines = ["flowchart TD"]
    layout = tiers()
    for tier, members in layout.items():
        lines.append(f"  subgraph {tier}")
        lines += [f"    {node(p)}[{p.removeprefix('cassle.')}]" for p in members]
        lines.append("  end")
    for source in (p for members in layout.values() for p in members):
        lines += [f"  {node(source)} --> {node(target)}" for target in sorted(edges[source])]
    return "\n".join(lines)


def main() -> int:
    print(mermaid(transitive_reduction(package_graph())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
