"""The code each DVC stage runs, found from its imports: dvc.yaml's code deps are generated.

A stage's cmd ``stica NAME ...`` runs the click command of a ``stages/`` module
(:data:`stica.cli.COMMANDS`). The stage's code is that module and every project module it imports,
transitively, counting the imports inside function bodies too (stages and ``stica`` import lazily,
so that ``stica --help`` does not load torch) and the ``__init__.py`` of every package on the way.
A package folder whose every module is used is listed as the folder.

    python scripts/stage_deps.py          # rewrite the code deps of every stage in dvc.yaml
    python scripts/stage_deps.py --check  # only report the difference (exit 1 if any)

``tests/test_stage_deps.py`` fails when dvc.yaml's deps miss a file a stage imports.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("stica", "stages")  # top-level packages whose files are code deps
DVC_YAML = ROOT / "dvc.yaml"


def module_path(name: str, root: Path = ROOT) -> Path | None:
    """The file of project module ``name`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    if name.split(".")[0] not in PROJECT:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Project modules that ``path`` imports anywhere (module level, functions, methods).

    ``from a import b`` counts ``a.b`` when it is a module, else ``a``; every import also counts
    the packages above it, whose ``__init__.py`` runs first.
    """
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.add(base)
            for alias in node.names:
                if module_path(f"{base}.{alias.name}", root) is not None:
                    found.add(f"{base}.{alias.name}")
    out = set()
    for module in found:
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            if module_path(".".join(parts[:i]), root) is not None:
                out.add(".".join(parts[:i]))
    return out


def code_files(module: str, root: Path = ROOT) -> set[Path]:
    """Every project file that importing ``module`` (and calling into it) can run."""
    start = module_path(module, root)
    if start is None:
        raise ValueError(f"not a project module: {module}")
    seen: set[Path] = set()
    todo = [start]
    for parent in _parents(module):
        todo.append(module_path(parent, root))
    while todo:
        path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(module_path(m, root) for m in imports_of(path, root))
    return seen


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def stage_module(cmd: str) -> str:
    """The ``stages`` module that a stage's ``stica NAME ...`` cmd runs."""
    from stica.cli import COMMANDS

    words = cmd.split()
    if len(words) < 2 or words[0] != "stica" or words[1] not in COMMANDS:
        raise ValueError(f"not a stica command: {cmd!r}")
    return COMMANDS[words[1]].split(":")[0]


def compact(files: set[Path], root: Path = ROOT) -> list[str]:
    """Deps covering exactly ``files``: a folder where every module under it is used."""
    rel = {f.relative_to(root).as_posix() for f in files}
    folders = set()
    for f in files:
        for folder in f.parents:
            if folder == root or root not in folder.parents:
                break
            modules = {p.relative_to(root).as_posix() for p in folder.rglob("*.py")}
            if modules <= rel:
                folders.add(folder.relative_to(root).as_posix())
    # keep only the outermost folders, then the files no folder covers
    top = {d for d in folders if not any(d.startswith(f"{o}/") for o in folders)}
    rest = {f for f in rel if not any(f.startswith(f"{d}/") for d in top)}
    return sorted(top | rest)


def is_code_dep(dep: str) -> bool:
    return dep.split("/")[0] in PROJECT


def covers(dep: str, file: str) -> bool:
    return file == dep or file.startswith(dep.rstrip("/") + "/")


def stage_deps(dvc_yaml: Path = DVC_YAML, root: Path = ROOT) -> dict[str, list[str]]:
    """{stage: its generated code deps} for every stage of ``dvc_yaml``."""
    stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    return {
        name: compact(code_files(stage_module(s["cmd"]), root), root) for name, s in stages.items()
    }


def rewrite(text: str, generated: dict[str, list[str]]) -> str:
    """``dvc.yaml``'s text with each stage's code deps replaced by ``generated`` (its data deps,
    comments and everything else kept in place)."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        head = re.match(r"^  ([A-Za-z0-9_-]+):\s*$", line)
        if head:
            stage = head.group(1)
        if stage in generated and re.match(r"^    deps:\s*$", line):
            out.append(line)
            i += 1
            kept = []
            while i < len(lines) and re.match(r"^      - ", lines[i]):
                dep = lines[i].split("- ", 1)[1].strip()
                if not is_code_dep(dep):
                    kept.append(lines[i])
                i += 1
            out.extend(kept)
            out.extend(f"      - {dep}\n" for dep in generated[stage])
            continue
        out.append(line)
        i += 1
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report, do not rewrite")
    args = parser.parse_args(argv)
    generated = stage_deps()
    stages = yaml.safe_load(DVC_YAML.read_text(encoding="utf-8"))["stages"]
    differs = False
    for name, deps in generated.items():
        listed = [d for d in stages[name].get("deps", []) if is_code_dep(d)]
        if listed != deps:
            differs = True
            print(f"{name}: -{sorted(set(listed) - set(deps))} +{sorted(set(deps) - set(listed))}")
    if args.check:
        return int(differs)
    if differs:
        DVC_YAML.write_text(rewrite(DVC_YAML.read_text(encoding="utf-8"), generated))
        print(f"rewrote {DVC_YAML}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
