"""Where things are in a spec file: the line and column of every key and item, for problem messages."""

from __future__ import annotations

import yaml

Path_ = tuple[str | int, ...]
Marks = dict[Path_, tuple[int, int]]


def collect_marks(node: yaml.Node, path: Path_, marks: Marks) -> None:
    """The position of every key (for mappings) and item (for sequences) under `node`."""
    marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            marks[child] = (key.start_mark.line + 1, key.start_mark.column + 1)
            collect_marks(value, child, marks)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            collect_marks(value, (*path, index), marks)


def where(label: str, marks: Marks, path: Path_) -> str:
    """`label:line:col` of `path`, or of its nearest ancestor the file holds (a missing field's parent)."""
    for end in range(len(path), -1, -1):
        mark = marks.get(path[:end])
        if mark:
            return f"{label}:{mark[0]}:{mark[1]}"
    return label


def dotted(path: Path_) -> str:
    return ".".join(str(part) for part in path)
