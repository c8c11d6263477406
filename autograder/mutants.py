"""Automatic mutants of a solution: the mistakes students make, made by rewriting the code.

Each mutant changes one place of one answer cell's solution, the way a student's slip would:

========================  =====================================================================
``arithmetic``            ``+``/``-``, ``*``/``/``, ``**``/``*``, ``@``/``*``, ``//``/``/`` swapped
``operands``              the two sides of ``-``, ``/``, ``@`` or ``**`` swapped
``call``                  a ``sqrt``, ``abs``, ``exp``, ``log`` or ``square`` left out
``comparison``            ``<``/``<=``, ``>``/``>=``, ``<``/``>``, ``==``/``!=`` swapped
``constant``              a number nudged: 0 and 1 swapped, 2 to 1, n to n - 1 and n + 1, x to 2x and x/2
``sign``                  a unary minus dropped, or the returned value negated
``statement``             one statement left out
``transpose``             a ``.T`` left out
``axis``                  ``axis=0`` and ``axis=1`` swapped, ``axis=-1`` to 0, the ``axis`` left out
``reduction``             ``mean``/``sum``, ``max``/``min``, ``argmax``/``argmin`` swapped
``loop bound``            ``range(n)`` to ``range(n - 1)`` and ``range(n + 1)``, a start moved by one
``ignored argument``      a parameter replaced, everywhere in the body, by its default value
``in place``              ``x = x - y`` made ``x -= y``, ``np.array(x)`` made ``np.asarray(x)``,
                          a ``.copy()`` left out: the caller's array changes
``early exit``            a ``break`` at the end of a loop's body
========================  =====================================================================

A mutant is identified by its :attr:`Mutant.key` (the cell, what changed, and the line as it
was), which stays the same when other lines of the solution change; ``audit.toml`` records,
by key, the surviving mutants that are equivalent to the solution and why.
"""

from __future__ import annotations

import ast
import copy
import difflib
from dataclasses import dataclass
from typing import Callable, Iterator

_ARITHMETIC: dict[type, list[type]] = {
    ast.Add: [ast.Sub], ast.Sub: [ast.Add], ast.Mult: [ast.Div], ast.Div: [ast.Mult, ast.FloorDiv],
    ast.Pow: [ast.Mult], ast.MatMult: [ast.Mult], ast.FloorDiv: [ast.Div],
}
_COMPARISON: dict[type, list[type]] = {
    ast.Lt: [ast.LtE, ast.Gt], ast.LtE: [ast.Lt], ast.Gt: [ast.GtE, ast.Lt], ast.GtE: [ast.Gt],
    ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq], ast.Is: [ast.IsNot], ast.IsNot: [ast.Is],
    ast.In: [ast.NotIn], ast.NotIn: [ast.In],
}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.MatMult: "@",
            ast.FloorDiv: "//", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
            ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
_NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.MatMult, ast.Pow)
_UNARY_CALLS = {"sqrt", "abs", "fabs", "exp", "log", "square"}
_REDUCTIONS = {"mean": "sum", "sum": "mean", "max": "min", "min": "max", "argmax": "argmin", "argmin": "argmax",
               "amax": "amin", "amin": "amax", "nanmax": "nanmin", "nanmin": "nanmax", "maximum": "minimum",
               "minimum": "maximum", "nansum": "nanmean", "nanmean": "nansum"}


@dataclass(frozen=True)
class Mutant:
    """One answer cell's solution with one change."""

    cell: str
    operator: str
    description: str
    anchor: str  # the first line that changed (or, for an added line, the line above it), normalised
    diff: str  # the changed lines, "- old" and "+ new"
    code: str  # the whole mutated cell
    occurrence: int = 1  # the same change at the same line text a second time, a third time...

    @property
    def key(self) -> str:
        """What identifies this mutant in ``audit.toml``."""
        where = f"{self.cell}: {self.description} in `{self.anchor.strip()}`"
        return where if self.occurrence == 1 else f"{where} (occurrence {self.occurrence})"


def _constant_nudges(value: object) -> list[object]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return []
    if isinstance(value, int):
        return {0: [1], 1: [0, 2], 2: [1, 3]}.get(value, [value - 1, value + 1])
    if value == 0.0:
        return [1.0]
    if value == 1.0:
        return [0.0, 2.0]
    if value == 2.0:
        return [1.0, 4.0]
    return [value * 2, value / 2]


def _one(value: ast.expr, delta: int) -> ast.expr:
    return ast.BinOp(left=value, op=ast.Add() if delta > 0 else ast.Sub(), right=ast.Constant(1))


class _Site:
    """A place in the tree and the ways to change it: each way edits a copy of the tree."""

    def __init__(self, operator: str, description: str, edit: Callable[[ast.AST, dict[int, ast.AST]], None]) -> None:
        self.operator = operator
        self.description = description
        self.edit = edit


def _replace_in_parent(parents: dict[int, ast.AST], node: ast.AST, new: ast.AST | None) -> None:
    """Put ``new`` where ``node`` is (``None``: remove it from its statement list)."""
    parent = parents[id(node)]
    for field, value in ast.iter_fields(parent):
        if value is node:
            setattr(parent, field, new)
            return
        if isinstance(value, list) and any(item is node for item in value):
            index = next(i for i, item in enumerate(value) if item is node)
            if new is None:
                del value[index]
                if not value:
                    value.append(ast.Pass())
            else:
                value[index] = new
            return
    raise ValueError("node not found in its parent")


def _sites(node: ast.AST, parameters: set[str]) -> Iterator[_Site]:
    """The ways to mutate ``node`` itself."""
    if isinstance(node, (ast.BinOp, ast.AugAssign)):
        for replacement in _ARITHMETIC.get(type(node.op), []):
            yield _Site("arithmetic", f"`{_SYMBOLS[type(node.op)]}` replaced by `{_SYMBOLS[replacement]}`",
                        lambda target, parents, replacement=replacement: setattr(target, "op", replacement()))
    if isinstance(node, ast.BinOp) and isinstance(node.op, _NON_COMMUTATIVE):
        def swap(target, parents):
            target.left, target.right = target.right, target.left
        yield _Site("operands", f"the two sides of `{_SYMBOLS[type(node.op)]}` swapped", swap)
    if isinstance(node, ast.Compare):
        for position, op in enumerate(node.ops):
            for replacement in _COMPARISON.get(type(op), []):
                def edit(target, parents, position=position, replacement=replacement):
                    target.ops[position] = replacement()
                yield _Site("comparison", f"`{_SYMBOLS[type(op)]}` replaced by `{_SYMBOLS[replacement]}`", edit)
    if isinstance(node, ast.Constant):
        for nudged in _constant_nudges(node.value):
            yield _Site("constant", f"`{node.value!r}` replaced by `{nudged!r}`",
                        lambda target, parents, nudged=nudged: setattr(target, "value", nudged))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        yield _Site("sign", "a minus sign left out",
                    lambda target, parents: _replace_in_parent(parents, target, target.operand))
    if isinstance(node, ast.Return) and node.value is not None and not isinstance(node.value, (ast.Tuple, ast.Constant)):
        yield _Site("sign", "the returned value negated",
                    lambda target, parents: setattr(target, "value", ast.UnaryOp(ast.USub(), target.value)))
    if isinstance(node, ast.Attribute) and node.attr == "T" and isinstance(node.ctx, ast.Load):
        yield _Site("transpose", "`.T` left out",
                    lambda target, parents: _replace_in_parent(parents, target, target.value))
    if isinstance(node, ast.Attribute) and node.attr in _REDUCTIONS:
        other = _REDUCTIONS[node.attr]
        yield _Site("reduction", f"`{node.attr}` replaced by `{other}`",
                    lambda target, parents, other=other: setattr(target, "attr", other))
    if isinstance(node, ast.Call):
        yield from _call_sites(node)
    if isinstance(node, (ast.For, ast.While)) and not isinstance(node.body[-1], (ast.Break, ast.Return, ast.Raise)):
        yield _Site("early exit", "a `break` at the end of the loop's body",
                    lambda target, parents: target.body.append(ast.Break()))
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
            and isinstance(node.value, ast.BinOp) and isinstance(node.value.left, ast.Name) \
            and node.value.left.id == node.targets[0].id and node.targets[0].id in parameters:
        name = node.targets[0].id

        def in_place(target, parents, name=name):
            _replace_in_parent(parents, target, ast.AugAssign(target=ast.Name(name, ast.Store()), op=target.value.op,
                                                              value=target.value.right))
        yield _Site("in place", f"`{name} = {name} ...` made an in-place update of the argument `{name}`", in_place)


def _call_sites(node: ast.Call) -> Iterator[_Site]:
    function = node.func
    name = function.attr if isinstance(function, ast.Attribute) else function.id if isinstance(function, ast.Name) else ""
    if name in _UNARY_CALLS and len(node.args) == 1 and not node.keywords:
        yield _Site("call", f"the `{name}` left out",
                    lambda target, parents: _replace_in_parent(parents, target, target.args[0]))
    for position, keyword in enumerate(node.keywords):
        if keyword.arg == "axis" and isinstance(keyword.value, (ast.Constant, ast.UnaryOp)):
            try:
                axis = ast.literal_eval(keyword.value)
            except ValueError:
                continue
            for other in {0: [1], 1: [0], -1: [0]}.get(axis, []) if isinstance(axis, int) else []:
                def edit(target, parents, position=position, other=other):
                    target.keywords[position].value = ast.Constant(other)
                yield _Site("axis", f"`axis={axis}` replaced by `axis={other}`", edit)

            def drop(target, parents, position=position):
                del target.keywords[position]
            yield _Site("axis", f"`axis={axis}` left out", drop)
    if name == "range" and node.args and not node.keywords:
        if len(node.args) == 1:
            for delta in (-1, 1):
                def edit(target, parents, delta=delta):
                    target.args[0] = _one(target.args[0], delta)
                yield _Site("loop bound", f"`range(n)` made `range(n {'+' if delta > 0 else '-'} 1)`", edit)
        else:
            for index, delta in ((0, 1), (1, -1), (1, 1)):
                def edit(target, parents, index=index, delta=delta):
                    target.args[index] = _one(target.args[index], delta)
                part = "start" if index == 0 else "stop"
                yield _Site("loop bound", f"the {part} of `range` moved by {'+' if delta > 0 else '-'}1", edit)
    if isinstance(function, ast.Attribute) and function.attr == "array" and node.args:
        yield _Site("in place", "`np.array` (a copy) replaced by `np.asarray` (no copy when it need not)",
                    lambda target, parents: setattr(target.func, "attr", "asarray"))
    if isinstance(function, ast.Attribute) and function.attr == "copy" and not node.args and not node.keywords:
        yield _Site("in place", "a `.copy()` left out",
                    lambda target, parents: _replace_in_parent(parents, target, target.func.value))


def _statement_sites(body: list[ast.stmt]) -> Iterator[tuple[ast.stmt, _Site]]:
    for statement in body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring
        if isinstance(statement, (ast.Return, ast.FunctionDef, ast.Import, ast.ImportFrom, ast.Pass)):
            continue
        yield statement, _Site("statement", "a statement left out",
                               lambda target, parents: _replace_in_parent(parents, target, None))


def _defaults(function: ast.FunctionDef) -> dict[str, ast.expr]:
    positional = function.args.posonlyargs + function.args.args
    defaults = dict(zip([arg.arg for arg in positional[len(positional) - len(function.args.defaults):]],
                        function.args.defaults))
    defaults.update({arg.arg: default for arg, default in zip(function.args.kwonlyargs, function.args.kw_defaults)
                     if default is not None})
    return defaults


def _parameters(function: ast.FunctionDef) -> set[str]:
    arguments = function.args
    return {arg.arg for arg in arguments.posonlyargs + arguments.args + arguments.kwonlyargs}


def mutants_of(cell: str, solution: str) -> list[Mutant]:
    """Every mutant of one answer cell's ``solution`` (the code without solution markers)."""
    try:
        tree = ast.parse(solution)
    except SyntaxError:
        return []
    original = ast.unparse(tree)
    # Every node once, in a fixed order, with the function it is in.
    located: list[tuple[ast.AST, ast.FunctionDef | None]] = []

    def visit(node: ast.AST, function: ast.FunctionDef | None) -> None:
        located.append((node, function))
        for child in ast.iter_child_nodes(node):
            visit(child, node if isinstance(node, ast.FunctionDef) else function)

    visit(tree, None)
    candidates: list[tuple[int, _Site]] = []
    for index, (node, function) in enumerate(located):
        parameters = _parameters(function) if function else set()
        for site in _sites(node, parameters):
            candidates.append((index, site))
        inside = function or (node if isinstance(node, ast.FunctionDef) else None)
        for field in ("body", "orelse"):
            body = getattr(node, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt) and inside is not None:
                for statement, site in _statement_sites(body):
                    candidates.append((next(i for i, (n, _) in enumerate(located) if n is statement), site))
        if isinstance(node, ast.FunctionDef):
            for name, default in _defaults(node).items():
                candidates.append((index, _ignore_argument(name, default)))

    found: dict[str, Mutant] = {}
    seen: dict[str, int] = {}
    for index, site in candidates:
        clone = copy.deepcopy(tree)
        nodes: list[ast.AST] = []
        parents: dict[int, ast.AST] = {}

        def collect(node: ast.AST) -> None:
            nodes.append(node)
            for child in ast.iter_child_nodes(node):
                parents[id(child)] = node
                collect(child)

        collect(clone)
        try:
            site.edit(nodes[index], parents)
            mutated = ast.unparse(ast.fix_missing_locations(clone))
            compile(mutated, f"<mutant of {cell}>", "exec")
        except (ValueError, TypeError, SyntaxError, AttributeError, IndexError):
            continue
        if mutated == original or mutated in found:
            continue
        anchor, diff = _changes(original, mutated)
        identity = f"{site.description}\n{anchor.strip()}"
        seen[identity] = seen.get(identity, 0) + 1
        found[mutated] = Mutant(cell, site.operator, site.description, anchor, diff, mutated, seen[identity])
    return list(found.values())


def _ignore_argument(name: str, default: ast.expr) -> _Site:
    def edit(target: ast.AST, parents: dict[int, ast.AST]) -> None:
        for node in ast.walk(target):
            for field, value in ast.iter_fields(node):
                if isinstance(value, ast.Name) and value.id == name and isinstance(value.ctx, ast.Load):
                    setattr(node, field, copy.deepcopy(default))
                elif isinstance(value, list):
                    value[:] = [copy.deepcopy(default) if isinstance(item, ast.Name) and item.id == name
                                and isinstance(item.ctx, ast.Load) else item for item in value]
    return _Site("ignored argument", f"the argument `{name}` ignored in favour of its default "
                                     f"`{ast.unparse(default)}`", edit)


def _changes(original: str, mutated: str) -> tuple[str, str]:
    """The first changed line of ``original`` (for an added line, the line above it), and the
    changed lines as "- old" / "+ new"."""
    before_lines, after_lines = original.splitlines(), mutated.splitlines()
    matcher = difflib.SequenceMatcher(a=before_lines, b=after_lines, autojunk=False)
    anchor, diff = "", []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if not anchor:
            anchor = before_lines[i1] if i1 < i2 else (before_lines[i1 - 1] if i1 else "")
            if i1 == i2:
                diff.append(f"  {anchor.strip()}")
        diff += [f"- {line.strip()}" for line in before_lines[i1:i2]]
        diff += [f"+ {line.strip()}" for line in after_lines[j1:j2]]
    return anchor, "\n".join(diff)
