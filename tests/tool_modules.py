"""The scripts under tools/ imported as modules, for tests that call their functions."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_tool(relative_path: str):
    """The script at ``relative_path`` in the repository, as a module named after its file."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool
