"""Sphinx hooks for the npnorm book.

* Jupyter Book always loads sphinx-thebe (live code cells via Binder). This book runs offline and
  has thebe switched off, yet the extension still injects its loader on every page - twice, which
  throws a JavaScript ``SyntaxError`` and names a CDN URL. We drop those scripts from every page.
"""

from __future__ import annotations

from typing import Any


def _drop_thebe(app, pagename: str, templatename: str, context: dict[str, Any], doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    keep = []
    for script in scripts:
        body = getattr(script, "attributes", {}).get("body", "") or ""
        if "sphinx-thebe" in str(script) or "THEBE_JS_URL" in body:
            continue
        keep.append(script)
    scripts[:] = keep


def setup(app) -> dict[str, Any]:
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
