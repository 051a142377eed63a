"""Helpers for tests of the HTML pages the tool writes (report.html, capacity.html)."""

import re
from html.parser import HTMLParser

_URL_ATTRIBUTES = ("src", "href", "srcset", "action", "data", "poster", "xlink:href", "formaction", "background")


class _Refs(HTMLParser):
    """Every URL-ish reference in a document: src/href/srcset/action/… and CSS url()."""

    def __init__(self, relative_links: bool):
        super().__init__()
        self.relative_links = relative_links
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in _URL_ATTRIBUTES and v and not (self.relative_links and tag == "a" and k == "href" and _relative(v)):
                self.refs.append(v)
            if k == "style" and v:
                self.refs += re.findall(r"url\(\s*['\"]?([^'\")]+)", v)


def _relative(url: str) -> bool:
    return not re.match(r"([a-z][a-z0-9+.-]*:|//)", url, re.I)


def external_refs(text: str, relative_links: bool = False) -> list[str]:
    """What a page refers to outside itself (any quoting, attributes, CSS url() and @import):
    all but in-page anchors and data: URLs. A self-contained page has none; `relative_links`
    lets links (<a href>) to files beside it pass (capacity.html links its region folders)."""
    p = _Refs(relative_links)
    p.feed(text)
    refs = p.refs + re.findall(r"url\(\s*['\"]?([^'\")]+)", text) + re.findall(r"@import\s+['\"]?([^'\";]+)", text)
    return [r for r in refs if not (r.startswith("#") or r.startswith("data:"))]
