"""Templates shared by the page routes (Jinja2 with autoescape always on: model output is untrusted)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import jinja2
import markdown
from fastapi.templating import Jinja2Templates

env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent.parent / "templates"),
                         autoescape=True)


def guidelines_html(text: str) -> str:
    """Markdown guidelines -> HTML, with raw HTML in the source escaped first."""
    return markdown.markdown(html.escape(text, quote=False))


env.filters["markdown"] = lambda t: jinja2.utils.markupsafe.Markup(guidelines_html(t or ""))
env.filters["tojson_compact"] = lambda v: json.dumps(v, sort_keys=True)
templates = Jinja2Templates(env=env)
