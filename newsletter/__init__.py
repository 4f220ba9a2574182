"""newsletter: write, check and send a calm monthly newsletter from Markdown."""

__version__ = "0.1.0"
