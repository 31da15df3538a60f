"""Dependencies point one way: data and nn never import each other; losses, metrics, samplers, optimisers
need only torch."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "seqrec"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def seqrec_imports(paths) -> set[str]:
    return {name for path in paths for name in imports_of(path) if name.startswith("seqrec")}


def test_data_never_imports_networks_and_networks_never_import_data():
    assert not {n for n in seqrec_imports((PACKAGE / "data").glob("*.py")) if n.startswith(("seqrec.nn", "seqrec.models"))}
    assert not {n for n in seqrec_imports((PACKAGE / "nn").glob("*.py")) if n.startswith(("seqrec.data", "seqrec.models"))}


def test_losses_metrics_samplers_need_only_torch():
    for name in ("losses.py", "metrics.py", "samplers.py", "optim.py"):
        third_party = {n.split(".")[0] for n in imports_of(PACKAGE / name)} - {"__future__", "math", "seqrec"}
        assert third_party <= {"torch"}, (name, third_party)
        assert seqrec_imports([PACKAGE / name]) <= {"seqrec.errors", "seqrec.ids"}


def test_importing_writes_nothing_and_configures_no_logging(tmp_path):
    import subprocess
    import sys

    code = ("import logging, seqrec; "
            "assert not logging.getLogger().handlers, 'import configured logging'; "
            "assert seqrec.__version__")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    assert list(tmp_path.iterdir()) == []
