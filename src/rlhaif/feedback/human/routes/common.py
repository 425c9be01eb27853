"""Templates shared by the page routes (Jinja2 with autoescape always on: model output is untrusted), the
guidelines' Markdown rendering (sanitised), and the bounded id of a path."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Annotated

import jinja2
import markdown
import nh3
from fastapi import Path as PathParam
from fastapi.templating import Jinja2Templates

from rlhaif.feedback.human.schemas import MAX_ID

AssignmentId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="an assignment id")]

# What rendered Markdown may contain: text formatting, lists, tables, code, links (http, https, mailto only).
ALLOWED_TAGS = {"a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "dl", "dt", "em", "h1", "h2", "h3",
                "h4", "h5", "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "s", "strong", "sub", "sup", "table",
                "tbody", "td", "th", "thead", "tr", "ul"}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}

env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent.parent / "templates"),
                         autoescape=True)


def guidelines_html(text: str) -> str:
    """Markdown guidelines -> HTML: raw HTML in the source is escaped first, then the rendered HTML is
    cleaned with an allow-list (nh3): only the tags above, and links to http, https and mailto only
    (``[x](javascript:...)`` loses its href). Links open without a referrer."""
    return nh3.clean(markdown.markdown(html.escape(text, quote=False)), tags=ALLOWED_TAGS,
                     attributes=ALLOWED_ATTRIBUTES, url_schemes=URL_SCHEMES, link_rel="noopener noreferrer")


env.filters["markdown"] = lambda t: jinja2.utils.markupsafe.Markup(guidelines_html(t or ""))
env.filters["tojson_compact"] = lambda v: json.dumps(v, sort_keys=True)
templates = Jinja2Templates(env=env)
