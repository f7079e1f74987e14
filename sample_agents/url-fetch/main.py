"""url-fetch: GET one URL and describe the response. Standard library only."""

from __future__ import annotations

import hashlib
import html
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from agents import AgentError, serve

TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def fetch(url: str, max_bytes: int, timeout: float) -> dict[str, Any]:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise AgentError("E_URL", f"only http and https URLs are allowed, not {url!r}")
    req = urllib.request.Request(url, headers={"User-Agent": "airlock-url-fetch/1.0"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, final_url = resp.status, resp.geturl()
            content_type = resp.headers.get("Content-Type")
            body = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as e:  # a response, just not a 2xx one
        status, final_url, content_type = e.code, url, e.headers.get("Content-Type")
        body = e.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise AgentError("E_FETCH", f"cannot fetch {url}: {reason}") from None
    truncated = len(body) > max_bytes
    body = body[:max_bytes]
    title = None
    if m := TITLE.search(body):
        title = html.unescape(m.group(1).decode("utf-8", "replace")).strip()[:500]
    return {
        "url": final_url,
        "status": status,
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "truncated": truncated,
        "content_type": content_type,
        "title": title,
    }


def handle(capability: str, payload: dict[str, Any]) -> dict[str, Any]:
    if capability != "fetch":
        raise AgentError("E_CAPABILITY", f"unknown capability {capability!r}")
    return fetch(
        payload["url"],
        int(payload.get("max_bytes", 1 << 20)),
        float(payload.get("timeout_seconds", 10)),
    )


if __name__ == "__main__":
    serve(handle)
