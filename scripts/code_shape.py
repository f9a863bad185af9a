"""The shape of certsync's product code, for the structure measures in a closing note:
module count and lines, the largest modules, the longest functions (code lines, the
docstring left out). Usage: python3 scripts/code_shape.py [tree] (default: this repo)."""

import ast
import pathlib
import sys

KINDS = ("_modules", "_states", "_runners", "_beacons", "_engines", "_utils", "_output")


def _code_lines(node):
    """Lines of a function's body after its docstring."""
    body = node.body
    documented = (
        isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )
    start = (body[1].lineno if len(body) > 1 else node.end_lineno) if documented else body[0].lineno
    return node.end_lineno - start + 1


def main(tree):
    root = pathlib.Path(tree) / "salt"
    files = sorted(p for kind in KINDS for p in (root / kind).glob("*.py"))
    sizes = sorted((len(p.read_text().splitlines()), p.relative_to(root)) for p in files)
    functions = sorted(
        (_code_lines(node), f"{path.relative_to(root)}:{node.name}")
        for path in files
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    )
    print(f"modules: {len(files)}, lines: {sum(size for size, _ in sizes)}")
    print("largest:", ", ".join(f"{path} {size}" for size, path in sizes[:-5:-1]))
    print("longest functions:", ", ".join(f"{name} {size}" for size, name in functions[:-5:-1]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[1])
