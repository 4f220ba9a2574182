"""The words readers see in mails and web pages, in German (default) and English."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "de": {
        "view_in_browser": "Im Browser ansehen",
        "unsubscribe": "Newsletter abbestellen",
        "unsubscribe_hint": "Du möchtest keine Mails mehr bekommen? Ein Klick genügt:",
        "why": "Du erhältst diesen Newsletter, weil du dich dafür angemeldet und deine Anmeldung bestätigt hast.",
        "why_site": "Du erhältst diesen Newsletter, weil du dich auf {site} dafür angemeldet und deine Anmeldung bestätigt hast.",
        "imprint": "Impressum",
        "phone": "Telefon",
        "email": "E-Mail",
        "links": "Links",
        "image": "Bild",
        "test_prefix": "[TEST]",
    },
    "en": {
        "view_in_browser": "View in your browser",
        "unsubscribe": "Unsubscribe",
        "unsubscribe_hint": "Don't want these emails any more? One click is enough:",
        "why": "You receive this newsletter because you signed up for it and confirmed your subscription.",
        "why_site": "You receive this newsletter because you signed up for it on {site} and confirmed your subscription.",
        "imprint": "Imprint",
        "phone": "Phone",
        "email": "Email",
        "links": "Links",
        "image": "Image",
        "test_prefix": "[TEST]",
    },
}


def texts(language: str) -> dict[str, str]:
    """The texts for a language; config validation guarantees the language exists."""
    return TEXTS[language]
