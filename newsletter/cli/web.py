"""Commands for the web endpoint: serve and form."""

from __future__ import annotations
