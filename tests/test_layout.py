"""Dependencies point one way (the layering seqrec/__init__ documents):

    data, nn  ->  losses, metrics, ranking, samplers, optim, options, train, evaluate, rundir
              ->  models  ->  runs, tuning, reproduce, analysis, export  ->  cli, service

data and nn never import each other; losses, metrics, ranking, samplers, optimisers need only torch (and
the standard library); nothing imports a layer above its own. Imports inside functions count too."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "seqrec"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "seqrec":  # from seqrec import losses
            names |= {f"seqrec.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def seqrec_imports(paths) -> set[str]:
    return {name for path in paths for name in imports_of(path) if name.startswith("seqrec")}


def test_data_never_imports_networks_and_networks_never_import_data():
    assert not {n for n in seqrec_imports((PACKAGE / "data").glob("*.py")) if n.startswith(("seqrec.nn", "seqrec.models"))}
    assert not {n for n in seqrec_imports((PACKAGE / "nn").glob("*.py")) if n.startswith(("seqrec.data", "seqrec.models"))}


STDLIB = {"__future__", "math", "collections", "dataclasses", "typing"}


def test_losses_metrics_ranking_samplers_need_only_torch():
    for name in ("losses.py", "metrics.py", "ranking.py", "samplers.py", "optim.py"):
        third_party = {n.split(".")[0] for n in imports_of(PACKAGE / name)} - STDLIB - {"seqrec", "numpy"}
        assert third_party <= {"torch"}, (name, third_party)
        assert seqrec_imports([PACKAGE / name]) <= {"seqrec.errors", "seqrec.ids"}


LAYERS = [  # a module may import only from its own layer or the ones before it
    {"seqrec.ids", "seqrec.errors", "seqrec.version"},
    {"seqrec.data", "seqrec.nn"},
    {"seqrec.losses", "seqrec.metrics", "seqrec.ranking", "seqrec.samplers", "seqrec.optim", "seqrec.options",
     "seqrec.train", "seqrec.evaluate", "seqrec.rundir", "seqrec.distributed"},
    {"seqrec.models"},
    {"seqrec.runs", "seqrec.reproduce", "seqrec.analysis", "seqrec.export", "seqrec.tuning"},
    {"seqrec.cli", "seqrec.service", "seqrec.__main__"},
]


def layer_of(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in layer):
            return index
    raise AssertionError(f"{module} is in no layer of test_layout.LAYERS: add it")


def test_nothing_imports_upward():
    for path in PACKAGE.rglob("*.py"):
        module = "seqrec." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if module.endswith("__init__"):
            module = module[: -len(".__init__")]
        if module == "seqrec":
            continue  # the package facade re-exports every layer
        for name in seqrec_imports([path]):
            if name == "seqrec":
                raise AssertionError(f"{module} imports the package facade")
            assert layer_of(name) <= layer_of(module), f"{module} imports {name}, a layer above it"


def test_importing_writes_nothing_and_configures_no_logging(tmp_path):
    import subprocess
    import sys

    code = ("import logging, seqrec; "
            "assert not logging.getLogger().handlers, 'import configured logging'; "
            "assert seqrec.__version__")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    assert list(tmp_path.iterdir()) == []
