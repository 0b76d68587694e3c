"""mlcore must stay importable and usable without Django (ARCHITECTURE.md)."""

import ast
import subprocess
import sys
from pathlib import Path

MLCORE = Path(__file__).resolve().parent.parent / "mlcore"
FORBIDDEN = ("django", "rest_framework", "labeler")


def test_it_finds_no_django_import_in_mlcore_sources():
    offenders = []
    for path in MLCORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_it_imports_every_mlcore_module_without_loading_django():
    modules = sorted(
        ".".join(p.relative_to(MLCORE.parent).with_suffix("").parts)
        for p in MLCORE.rglob("*.py")
        if p.name != "__init__.py"
    )
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('django' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=MLCORE.parent)
    assert out.stdout.strip() == "False"
