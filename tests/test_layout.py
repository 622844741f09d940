"""The layout's promises: the library (cells, layers, engines, traces) needs torch only and
imports no application; the applications say which extra to install when one is missing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lstmkit"
LIBRARY = ["cells", "nn", "engines", "trace.py", "intervene.py", "__init__.py"]
APPLICATIONS = ("training", "agreement", "inspect", "tasks", "cli", "data")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_lstmkit_pulls_in_no_application_dependency() -> None:
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import lstmkit\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new & {'matplotlib', 'h5py', 'tqdm', 'safetensors', 'numpy', 'triton'}))\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"import lstmkit imported {result.stdout.strip()}"


def test_the_library_imports_no_application() -> None:
    offenders = []
    for entry in LIBRARY:
        path = PACKAGE / entry
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            tree = ast.parse(file.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "lstmkit" and len(parts) > 1 and parts[1] in APPLICATIONS:
                        offenders.append(f"{file.relative_to(PACKAGE)} imports {name}")
    assert not offenders, "the library imports applications:\n" + "\n".join(offenders)


def test_a_missing_application_dependency_is_one_sentence() -> None:
    code = (
        "import sys\n"
        "sys.modules['safetensors'] = None  # as if `pip install lstmkit` without [apps]\n"
        "from lstmkit.cli.main import main\n"
        "sys.exit(main(['train', '--help']))\n"
    )
    result = _run(code)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "pip install 'lstmkit[apps]'" in result.stderr
    assert "safetensors is not installed" in result.stderr
