"""Every problem `code` the code base can answer with, read from the source (not from a list).

A code enters a response in one of a few ways, and each is found by reading the syntax tree:

* a `DomainError` subclass raised without `code=`: the class's own `code`;
* `code="..."` passed to one of those classes (or `code=name`, where `name` is a parameter, a
  local assigned from string literals, or compared with string literals in the same function);
* `problem(status, "...")` and the framework codes in `kernel.problems._HTTP_CODES`.

Status comes from the class (or an explicit `status=`) the code is raised with.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGES = ("kernel", "stimulus", "lottery", "wallet_adapter", "merchants")
ROOT_ERROR = "DomainError"


def _modules(root: Path) -> dict[str, ast.Module]:
    out: dict[str, ast.Module] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            out[str(path.relative_to(root))] = ast.parse(path.read_text(), str(path))
    return out


def _error_classes(modules: dict[str, ast.Module]) -> dict[str, tuple[str | None, int | None, str]]:
    """class name -> (own code, own status, base name) for the DomainError family."""
    raw: dict[str, tuple[str | None, int | None, str]] = {}
    for tree in modules.values():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            base = next((b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                         if isinstance(b, ast.Name | ast.Attribute)), "")
            code = status = None
            for item in node.body:
                target = item.target if isinstance(item, ast.AnnAssign) else (
                    item.targets[0] if isinstance(item, ast.Assign) else None)
                value = item.value if isinstance(item, ast.AnnAssign | ast.Assign) else None
                if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
                    if target.id == "code":
                        code = value.value
                    elif target.id == "status":
                        status = value.value
            raw[node.name] = (code, status, base)
    family: dict[str, tuple[str | None, int | None, str]] = {}

    def resolve(name: str) -> tuple[str | None, int | None] | None:
        if name not in raw:
            return None
        code, status, base = raw[name]
        if name == ROOT_ERROR:
            return code, status
        parent = resolve(base)
        if parent is None:
            return None
        return code or parent[0], status or parent[1]

    for name in raw:
        resolved = resolve(name)
        if resolved is not None:
            family[name] = (resolved[0], resolved[1], raw[name][2])
    return family


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _name_values(function: ast.AST, name: str) -> set[str]:
    """String literals a local `name` is assigned or compared with inside `function`."""
    values: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            values |= _strings(node.value)
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == name:
            for op, right in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, ast.Eq | ast.In):
                    values |= _strings(right)
    return values


def _branch_values(function: ast.AST, call: ast.Call, name: str) -> set[str]:
    """The literals `name` equals in the innermost `if name == "..."` holding `call`."""
    best: set[str] = set()
    for node in ast.walk(function):
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == name
                and any(call is inner for stmt in node.body for inner in ast.walk(stmt))):
            best = _strings(node.test)
    return best


def _callers_args(tree: ast.Module, function: str, position: int) -> set[str]:
    """String literals passed at `position` to calls of `function` in the same module."""
    values: set[str] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function
                and len(node.args) > position and isinstance(node.args[position], ast.Constant)):
            values.add(node.args[position].value)
    return values


def raisable_codes(root: Path) -> dict[str, set[int]]:
    """code -> the statuses it can be answered with."""
    modules = _modules(root)
    family = _error_classes(modules)
    found: dict[str, set[int]] = defaultdict(set)
    for code, status, _ in family.values():
        if code and status:
            found[code].add(status)
    for tree in modules.values():
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        parent_of = {id(child): f for f in functions for child in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_HTTP_CODES"
                                                    for t in node.targets):
                assert isinstance(node.value, ast.Dict)
                for key, value in zip(node.value.keys, node.value.values, strict=True):
                    assert isinstance(key, ast.Constant) and isinstance(value, ast.Constant)
                    found[value.value].add(key.value)
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else (
                node.func.attr if isinstance(node.func, ast.Attribute) else "")
            if name == "problem" and len(node.args) >= 2 and isinstance(node.args[0], ast.Constant):
                status = node.args[0].value
                arg = node.args[1]
                function = parent_of.get(id(node))
                codes = ({arg.value} if isinstance(arg, ast.Constant)
                         else _name_values(function, arg.id) if isinstance(arg, ast.Name) and function else set())
                for code in codes:
                    found[code].add(status)
            if name not in family:
                continue
            status = family[name][1]
            for keyword in node.keywords:
                if keyword.arg == "status" and isinstance(keyword.value, ast.Constant):
                    status = keyword.value.value
            code_arg = next((k.value for k in node.keywords if k.arg == "code"), None)
            assert status is not None
            if code_arg is None:
                continue  # the class's own code, counted above
            if isinstance(code_arg, ast.Constant):
                found[code_arg.value].add(status)
                continue
            function = parent_of.get(id(node))
            assert isinstance(code_arg, ast.Name) and function is not None, ast.dump(code_arg)
            assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
            params = [a.arg for a in function.args.args]
            codes = _branch_values(function, node, code_arg.id) or _name_values(function, code_arg.id)
            if not codes and code_arg.id in params:
                codes |= _callers_args(tree, function.name, params.index(code_arg.id))
            assert codes, f"cannot tell which codes {function.name} raises"
            for code in codes:
                found[code].add(status)
    return dict(found)
