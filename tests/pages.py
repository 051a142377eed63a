"""Helpers for tests of the HTML pages the tool writes (report.html, capacity.html)."""

import re
from html.parser import HTMLParser

_URL_ATTRIBUTES = ("src", "href", "srcset", "action", "data", "poster", "xlink:href", "formaction", "background")


class _Refs(HTMLParser):
    """Every URL-ish reference in a document: src/href/srcset/action/… and CSS url()."""

    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in _URL_ATTRIBUTES and v:
                self.refs.append(v)
            if k == "style" and v:
                self.refs += re.findall(r"url\(\s*['\"]?([^'\")]+)", v)


def external_refs(text: str) -> list[str]:
    """What a page would fetch (any quoting, attributes, CSS url() and @import): all but
    in-page anchors and data: URLs. A self-contained page has none."""
    p = _Refs()
    p.feed(text)
    refs = p.refs + re.findall(r"url\(\s*['\"]?([^'\")]+)", text) + re.findall(r"@import\s+['\"]?([^'\";]+)", text)
    return [r for r in refs if not (r.startswith("#") or r.startswith("data:"))]
