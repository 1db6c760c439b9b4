"""The layout's rules (docs/architecture.md): imports point one way, no circle, modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "model_code"
#: What each part of car_damage may import from car_damage (itself always allowed).
ALLOWED = {
    "errors": set(),
    "model": set(),
    "data": {"errors", "model"},
    "answer": {"errors", "model", "data"},
    "training": {"errors", "model", "data", "answer"},
    "deploy": {"model"},
    "local_service": set(),
    "cli": {"errors", "model", "data", "answer", "training"},
    "demo": {"errors", "model", "data", "answer", "training", "local_service", "preflight"},
    "preflight": set(),
    "__main__": {"cli"},
    "__init__": set(),
}
MAX_MODULE_LINES = 400


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (lazy imports inside functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _part(module: str) -> str | None:
    """``car_damage.answer.options`` -> ``answer``; None outside car_damage."""
    pieces = module.split(".")
    if pieces[0] != "car_damage" or len(pieces) < 2:
        return None
    return pieces[1]


def _modules(package: str) -> list[Path]:
    return sorted((PACKAGE_ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("car_damage"), ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_car_damage_imports_point_down(path: Path) -> None:
    own = path.relative_to(PACKAGE_ROOT / "car_damage").parts[0].removesuffix(".py")
    assert own in ALLOWED, f"{path}: a new part of car_damage; add it to ALLOWED and docs/architecture.md"
    for module in _imports(path):
        part = _part(module)
        if part is None or part == own or part not in ALLOWED:
            continue  # outside car_damage, within the same part, or a name imported from a part (checked above)
        assert part in ALLOWED[own], f"{path.name} ({own}) imports {module}: {own} may import only {ALLOWED[own]}"


def test_the_allowed_graph_has_no_circle() -> None:
    def reaches(start: str, target: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(step == target or (step not in seen and reaches(step, target, seen | {step}))
                   for step in ALLOWED[start])

    assert [part for part in ALLOWED if reaches(part, part)] == []


@pytest.mark.parametrize("path", _modules("car_damage"), ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_no_module_imports_its_own_importers(path: Path) -> None:
    """Within one part, module A importing B while B imports A (the old via <-> coco circle) is refused."""
    own = "car_damage." + ".".join(path.relative_to(PACKAGE_ROOT / "car_damage").with_suffix("").parts)
    for module in _imports(path):
        other = PACKAGE_ROOT / Path(*module.split("."))
        other_file = other.with_suffix(".py")
        if other_file.is_file() and other_file != path:
            assert own not in _imports(other_file), f"{own} and {module} import each other"


@pytest.mark.parametrize("package", ["car_damage", "mrcnn"])
def test_modules_stay_under_the_size_guideline(package: str) -> None:
    long = {str(p.relative_to(PACKAGE_ROOT)): n for p in _modules(package)
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_mrcnn_never_imports_car_damage() -> None:
    offenders = [str(p) for p in _modules("mrcnn") if any(_part(m) for m in _imports(p))]
    assert offenders == []
