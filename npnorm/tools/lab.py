"""Open the book in JupyterLab with every MyST chapter opening as a notebook: ``make lab``.

The chapters are MyST-markdown files. Jupytext (installed with the requirements, its server
extension enabled automatically) reads them as notebooks; this script additionally makes
"Jupytext Notebook" the default viewer for markdown files, in a project-local JupyterLab settings
directory (``.jupyter-lab-settings/``, not committed), so a double click opens a chapter as a
notebook rather than as text. Saving writes the .md file back (outputs are never stored in it).
The kernel imports this checkout's ``npnorm`` (``PYTHONPATH`` is set to the project root).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / ".jupyter-lab-settings"
VIEWER_FILE = SETTINGS / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings"
DEFAULT_VIEWERS = {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}


def write_settings() -> Path:
    """Make Jupytext Notebook the default viewer for .md files (keeping other saved settings)."""
    config = {}
    if VIEWER_FILE.is_file():
        try:
            config = json.loads(VIEWER_FILE.read_text())
        except json.JSONDecodeError:
            config = {}
    config.setdefault("defaultViewers", {}).update(DEFAULT_VIEWERS)
    VIEWER_FILE.parent.mkdir(parents=True, exist_ok=True)
    VIEWER_FILE.write_text(json.dumps(config, indent=2))
    return VIEWER_FILE


def main(argv: list[str] | None = None) -> int:
    write_settings()
    env = dict(os.environ)
    env["JUPYTERLAB_SETTINGS_DIR"] = str(SETTINGS)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    env.pop("MPLBACKEND", None)  # inline figures in the notebooks
    exe = Path(sys.executable).with_name("jupyter-lab")
    cmd = [str(exe)] if exe.is_file() else [shutil.which("jupyter-lab") or "jupyter-lab"]
    cmd += [str(ROOT / "book"), *(argv if argv is not None else sys.argv[1:])]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in cmd:
        cmd.append("--allow-root")  # containers often run as root; JupyterLab refuses without it
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
