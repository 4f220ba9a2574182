"""The errors the library raises; the CLI turns each into one line and exit code 1."""


class NewsletterError(Exception):
    """A problem the author can fix; its message says what is wrong and where."""


class ConfigError(NewsletterError):
    """newsletter.toml is missing, unreadable or holds an invalid value."""


class IssueError(NewsletterError):
    """An issue file cannot be read, parsed or rendered."""


class SubscriberError(NewsletterError):
    """The subscriber file or a subscriber operation failed."""


class TransportError(NewsletterError):
    """Sending failed in a way that stops the whole run (login, TLS, refused sender)."""


class CsvError(SubscriberError):
    """A CSV file cannot be imported: not text, empty, or without a column of addresses."""
