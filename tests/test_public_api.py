"""Every name ``lth`` exports (``lth.__all__``) is documented and fully type-hinted.

The documentation site renders these docstrings and signatures (mkdocstrings), so a name that
lacks either shows up there bare. Checked: the docstring of every exported function and class,
and of the public methods and properties that lth's own classes define, whose first line must be
a whole sentence (the site shows it alone in summaries); the annotation of every parameter and
of the return value of those functions and methods. The annotations must
also resolve (``typing.get_type_hints``), names imported under ``TYPE_CHECKING`` included, so a
misspelt or unimported name fails here rather than on the site.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import lth

#: Parameters that carry no annotation by convention.
_IMPLICIT = {"self", "cls"}


def _exports() -> list[str]:
    return [name for name in lth.__all__ if name != "__version__"]


@functools.cache
def _type_checking_names(module_name: str) -> dict[str, Any]:
    """The names a module imports only for the type checker (``if TYPE_CHECKING:`` blocks)."""
    module = importlib.import_module(module_name)
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return {}
    namespace: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            imports = [stmt for stmt in node.body if isinstance(stmt, ast.Import | ast.ImportFrom)]
            code = compile(ast.Module(body=imports, type_ignores=[]), module.__file__ or module_name, "exec")
            exec(code, {"__name__": module_name, "__package__": module.__package__}, namespace)
    return namespace


def _namespace(function: Callable[..., Any]) -> dict[str, Any]:
    module_name = getattr(function, "__module__", None) or "lth"
    module = importlib.import_module(module_name)
    return {**_type_checking_names(module_name), **vars(module)}


def _own_doc(obj: Any) -> str:
    """The docstring ``obj`` itself has (not one inherited, nor a dataclass's generated signature)."""
    doc = obj.__doc__ if not isinstance(obj, property) else (obj.fget.__doc__ if obj.fget else None)
    doc = (doc or "").strip()
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""  # the text dataclasses write when the class has no docstring
    return doc


def _doc_problems(label: str, obj: Any) -> list[str]:
    """A missing docstring, or one whose first line is not a whole sentence."""
    doc = _own_doc(obj)
    if not doc:
        return [f"{label}: no docstring"]
    first = doc.splitlines()[0].rstrip()
    if not first.endswith((".", "?", "!")):
        return [f"{label}: the docstring's first line is not a whole sentence: {first!r}"]
    return []


def _hint_problems(label: str, function: Callable[..., Any], check_return: bool = True) -> list[str]:
    """What is missing from, or does not resolve in, the annotations of ``function``."""
    problems = []
    signature = inspect.signature(function)
    for parameter in signature.parameters.values():
        if parameter.name in _IMPLICIT:
            continue
        if parameter.annotation is inspect.Parameter.empty:
            problems.append(f"{label}: parameter {parameter.name!r} has no type hint")
    if check_return and signature.return_annotation is inspect.Signature.empty:
        problems.append(f"{label}: no return type hint")
    try:
        typing.get_type_hints(function, globalns=_namespace(function))
    except Exception as error:  # noqa: BLE001 - any failure to resolve is reported with its name
        problems.append(f"{label}: type hints do not resolve ({type(error).__name__}: {error})")
    return problems


def _lth_classes(cls: type) -> Iterator[type]:
    """``cls`` and its bases that lth defines (not pydantic's, torch's or the standard library's)."""
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] == "lth":
            yield klass


def _public_members(cls: type) -> Iterator[tuple[str, Any]]:
    """(name, raw attribute) of the public methods and properties lth's classes define on ``cls``."""
    seen: set[str] = set()
    for klass in _lth_classes(cls):
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            if inspect.isfunction(value) or isinstance(value, property):
                seen.add(name)
                yield name, value


def _class_problems(name: str, cls: type) -> list[str]:
    problems = _doc_problems(name, cls)
    init = vars(cls).get("__init__")
    if inspect.isfunction(init) and not dataclasses.is_dataclass(cls):
        problems += _hint_problems(f"{name}.__init__", init, check_return=False)
    for member, value in _public_members(cls):
        label = f"{name}.{member}"
        problems += _doc_problems(label, value)
        function = value.fget if isinstance(value, property) else value
        if function is not None:
            problems += _hint_problems(label, function)
    if dataclasses.is_dataclass(cls):
        try:
            typing.get_type_hints(cls, globalns=_namespace(cls))  # the fields' types
        except Exception as error:  # noqa: BLE001
            problems.append(f"{name}: field type hints do not resolve ({type(error).__name__}: {error})")
    return problems


def _problems(name: str) -> list[str]:
    obj = getattr(lth, name)
    if inspect.isclass(obj):
        return _class_problems(name, obj)
    if callable(obj):
        return _doc_problems(name, obj) + _hint_problems(name, obj)
    return [f"{name}: a {type(obj).__name__}, which this test does not know how to check"]


def test_exports_are_known():
    """The checks below cover every export: callables and classes (and the version string)."""
    assert isinstance(lth.__version__, str) and lth.__version__
    assert _exports(), "lth exports nothing"


@pytest.mark.parametrize("name", _exports())
def test_export_is_documented_and_typed(name: str):
    problems = _problems(name)
    assert not problems, f"lth.{name} is not fully documented/typed:\n  " + "\n  ".join(problems)


def test_public_api_summary():
    """All offenders at once: the list to work through when several names regress together."""
    offenders = {name: problems for name in _exports() if (problems := _problems(name))}
    report = "\n".join(f"lth.{name}:\n  " + "\n  ".join(problems) for name, problems in offenders.items())
    assert not offenders, f"{len(offenders)} exported names lack docstrings or type hints:\n{report}"
