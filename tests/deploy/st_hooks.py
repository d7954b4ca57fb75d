"""Schemathesis hooks for tests/deploy/test_schemathesis.py (loaded with SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

import re

import schemathesis

TRACE = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+|\bat [\w.$]+\([\w.]+:\d+\)")


@schemathesis.check
def no_stack_trace(ctx, response, case):
    """No response body, error or not, shows a stack trace or a source path of the server."""
    text = response.content.decode("utf-8", "replace") if response.content else ""
    if TRACE.search(text) or "/site-packages/" in text or "odyssey/deploy/" in text:
        raise AssertionError(
            f"the response to {case.method} {case.path} shows a stack trace or source path: {text[:300]!r}"
        )
