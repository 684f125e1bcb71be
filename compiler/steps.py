"""Group a compiled graph's nodes into program steps: analog steps and digital regions.

Every ``Linear`` node becomes an :class:`~anacc.compiler.program.AnalogStep`; the other nodes
are gathered into as few :class:`~anacc.compiler.program.DigitalStep` regions as the dataflow
allows. The schedule is a list schedule: whenever digital nodes are ready, all of them (and the
digital nodes they make ready) form one region; then every ready analog node runs; repeat.
Ties follow the graph's topological order, so the result is deterministic. Fewer regions mean
fewer calls into the digital engine per forward pass.
"""

from __future__ import annotations

from anacc.compiler.ir import Graph, Node
from anacc.compiler.program import AnalogStep, DigitalStep, Step


def schedule(graph: Graph) -> list[Step]:
    """The steps of ``graph`` in a runnable order (see the module docstring)."""
    order = graph.nodes()
    position = {n.name: i for i, n in enumerate(order)}
    producers = {t: n.name for n in order for t in n.outputs if t}
    waiting = {n.name: {producers[t] for t in n.reads if t in producers} for n in order}
    users: dict[str, list[str]] = {n.name: [] for n in order}
    for name, deps in waiting.items():
        for d in deps:
            users[d].append(name)
    by_name = {n.name: n for n in order}
    ready = sorted((n for n in waiting if not waiting[n]), key=position.__getitem__)
    groups: list[list[Node]] = []

    def finish(name: str) -> list[str]:
        woken = []
        for u in users[name]:
            waiting[u].discard(name)
            if not waiting[u]:
                woken.append(u)
        return woken

    while ready:
        region: list[Node] = []
        digital = [n for n in ready if by_name[n].op != "Linear"]
        while digital:
            digital.sort(key=position.__getitem__)
            name = digital.pop(0)
            ready.remove(name)
            region.append(by_name[name])
            for u in finish(name):
                ready.append(u)
                if by_name[u].op != "Linear":
                    digital.append(u)
        if region:
            groups.append(region)
        analog = sorted((n for n in ready if by_name[n].op == "Linear"), key=position.__getitem__)
        for name in analog:
            ready.remove(name)
            groups.append([by_name[name]])
        for name in analog:
            ready.extend(finish(name))
        ready.sort(key=position.__getitem__)
    assert sum(len(g) for g in groups) == len(order), "the graph has a cycle"
    return _steps(graph, groups)


def _steps(graph: Graph, groups: list[list[Node]]) -> list[Step]:
    needed_later: list[set[str]] = []
    later = {o.name for o in graph.outputs}
    for group in reversed(groups):
        needed_later.append(set(later))
        for node in group:
            later.update(node.reads)
    needed_later.reverse()
    steps: list[Step] = []
    regions = 0
    for group, after in zip(groups, needed_later, strict=True):
        if group[0].op == "Linear":
            node = group[0]
            layer = node.attr("layer", node.name)
            steps.append(AnalogStep(node.name, layer, (node.inputs[0],), tuple(node.outputs)))
            continue
        produced = {t for n in group for t in n.outputs if t}
        reads = [t for n in group for t in n.reads]
        inputs = [
            t for t in dict.fromkeys(reads) if t not in produced and t not in graph.initializers
        ]
        outputs = [t for n in group for t in n.outputs if t and t in after]
        regions += 1
        steps.append(DigitalStep(f"digital_{regions}", tuple(group), tuple(inputs), tuple(outputs)))
    return steps
