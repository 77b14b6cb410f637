"""Links built from untrusted strings (result files get shared and submitted by anyone).

Only absolute ``http``/``https`` URLs with a host ever become links, and they are
percent-encoded so that no quote, bracket, parenthesis, pipe, backslash or space survives to
break out of a markdown link or an HTML attribute. Anything else (``javascript:``, ``data:``,
relative paths) stays plain, escaped text.
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote, urlsplit

from embench.leaderboard import escape_md

__all__ = ["html_link", "linkify_html", "linkify_md", "md_link", "safe_url", "split_links"]

# Candidate URLs inside free text; the trailing-punctuation trim keeps "see https://x.org." sane.
_URL_IN_TEXT = re.compile(r"(?i)\bhttps?://[^\s<>\"'`|\[\](){}\\]+")
_TRAILING = ".,;:!?"
# Kept as they are: unreserved characters, URL delimiters and existing %-escapes. Everything
# else (quotes, brackets, parentheses, pipes, backslashes, spaces, non-ASCII) is %-encoded.
_SAFE = "/:?#&=%+,;@~!$*.-_"


def safe_url(url: str | None) -> str | None:
    """``url`` percent-encoded if it is an absolute http(s) URL with a host, else ``None``."""
    if not url:
        return None
    url = url.strip()
    if any(ord(c) < 33 or ord(c) == 127 for c in url):  # urlsplit would silently drop some
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return quote(url, safe=_SAFE)


def split_links(text: str) -> list[tuple[str, str | None]]:
    """``text`` cut into (segment, url) pairs: ``url`` is the safe URL of a segment that is a
    link, ``None`` for plain text."""
    out: list[tuple[str, str | None]] = []
    pos = 0
    for match in _URL_IN_TEXT.finditer(text):
        raw = match.group(0).rstrip(_TRAILING)
        url = safe_url(raw)
        if url is None:
            continue
        start = match.start()
        if start > pos:
            out.append((text[pos:start], None))
        out.append((raw, url))
        pos = start + len(raw)
    if pos < len(text):
        out.append((text[pos:], None))
    return out


def md_link(text: str, url: str | None) -> str:
    """A markdown link when ``url`` is a safe http(s) URL, else the escaped text alone."""
    safe = safe_url(url)
    return f"[{escape_md(text)}]({safe})" if safe else escape_md(text)


def html_link(text: str, url: str | None) -> str:
    """An HTML link when ``url`` is a safe http(s) URL, else the escaped text alone."""
    safe = safe_url(url)
    if not safe:
        return html.escape(text)
    return (f'<a href="{html.escape(safe)}" rel="nofollow noopener noreferrer">'
            f"{html.escape(text)}</a>")


def linkify_md(text: str) -> str:
    """Escaped ``text`` with its http(s) URLs as markdown links."""
    return "".join(md_link(seg, url) if url else escape_md(seg) for seg, url in split_links(text))


def linkify_html(text: str) -> str:
    """Escaped ``text`` with its http(s) URLs as HTML links."""
    return "".join(html_link(seg, url) if url else html.escape(seg)
                   for seg, url in split_links(text))
