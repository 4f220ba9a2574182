"""What comes back to the author's mailbox, as real servers write it: DSNs of Postfix, Exim,
Exchange / Office 365 and Gmail, a feedback report (ARF), Gmail's mailto unsubscribe, an
out-of-office reply, a reader's reply, and mail that has nothing to do with the newsletter.

Each function takes what the original message had (its Message-ID, recipient, envelope id)
and returns the raw bytes as they would lie in the mailbox.
"""

from __future__ import annotations

OURS = "impuls@praxis.example.org"


def postfix_dsn(recipient: str, message_id: str, envid: str = "", status: str = "5.1.1",
                diagnostic: str = "smtp; 550 5.1.1 <{r}>: Recipient address rejected: User unknown",
                action: str = "failed") -> bytes:
    envelope = f"Original-Envelope-Id: {envid}\n" if envid else ""
    text = diagnostic.format(r=recipient)
    return f"""\
Return-Path: <>
From: MAILER-DAEMON@mail.praxis.example.org (Mail Delivery System)
To: {OURS}
Subject: Undelivered Mail Returned to Sender
Date: Wed, 02 Dec 2026 10:00:00 +0100
Message-ID: <20261202090000.A1B2C3@mail.praxis.example.org>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.praxis.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{recipient}>: host mx.example.org said: {text}

--B1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.praxis.example.org
X-Postfix-Queue-ID: A1B2C3
{envelope}Arrival-Date: Wed,  2 Dec 2026 09:59:58 +0100 (CET)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.org
Diagnostic-Code: {text}

--B1
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Mira Sommerfeld <{OURS}>
To: {recipient}
Subject: Impuls im Dezember
Message-ID: {message_id}

--B1--
""".replace("\n", "\r\n").encode()


def exim_bounce(recipient: str, message_id: str) -> bytes:
    return f"""\
Return-path: <>
From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: {OURS}
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1abcde-000123-AB@mx.example.net>
X-Failed-Recipients: {recipient}
Auto-Submitted: auto-replied
Date: Wed, 02 Dec 2026 10:00:00 +0000

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {recipient}
    host mx.example.net [192.0.2.25]
    SMTP error from remote mail server after RCPT TO:<{recipient}>:
    550 5.1.1 <{recipient}>: Recipient address rejected: User unknown

------ This is a copy of the message, including all the headers. ------

From: Mira Sommerfeld <{OURS}>
To: {recipient}
Subject: Impuls im Dezember
Message-ID: {message_id}

Hallo,
""".replace("\n", "\r\n").encode()


def exchange_dsn(recipient: str, message_id: str) -> bytes:
    return f"""\
From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.example>
To: {OURS}
Subject: Unzustellbar: Impuls im Dezember
Date: Wed, 2 Dec 2026 09:00:03 +0000
Message-ID: <0a1b2c3d-4e5f@AM0PR01MB1234.eurprd01.prod.exchangelabs.com>
Auto-Submitted: auto-replied
Content-Language: de-DE
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="_000_"

--_000_
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

Ihre Nachricht hat {recipient} nicht erreicht, weil die Adresse nicht gefunden =
wurde.

Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'

--_000_
Content-Type: message/delivery-status

Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com
Received-From-MTA: dns;mail.praxis.example.org
Arrival-Date: Wed, 2 Dec 2026 09:00:02 +0000

Final-Recipient: rfc822;{recipient}
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup

--_000_
Content-Type: message/rfc822

From: Mira Sommerfeld <{OURS}>
To: {recipient}
Subject: Impuls im Dezember
Message-ID: {message_id}
MIME-Version: 1.0
Content-Type: text/plain

Hallo

--_000_--
""".replace("\n", "\r\n").encode()


def gmail_dsn(recipient: str, message_id: str, status: str = "4.2.2",
              diagnostic: str = "smtp; 452 4.2.2 The recipient's inbox is out of storage space.") -> bytes:
    action = "delayed" if status.startswith("4") else "failed"
    return f"""\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {OURS}
Subject: Delivery Status Notification ({"Delay" if action == "delayed" else "Failure"})
Date: Wed, 02 Dec 2026 01:00:00 -0800
Message-ID: <5f2a9c00.1c69fb81.gmail.dsn@mx.google.com>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000abc"; report-type=delivery-status

--000000000000abc
Content-Type: text/plain; charset="UTF-8"

** Die Nachricht wurde nicht zugestellt **

--000000000000abc
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; mail.praxis.example.org
Arrival-Date: Wed, 02 Dec 2026 00:59:58 -0800 (PST)

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Diagnostic-Code: {diagnostic}
Last-Attempt-Date: Wed, 02 Dec 2026 01:00:00 -0800 (PST)

--000000000000abc
Content-Type: message/rfc822

From: Mira Sommerfeld <{OURS}>
To: {recipient}
Subject: Impuls im Dezember
Message-ID: {message_id}

Hallo

--000000000000abc--
""".replace("\n", "\r\n").encode()


def arf_complaint(recipient: str, message_id: str, unsubscribe_url: str = "") -> bytes:
    unsubscribe = f"List-Unsubscribe: <{unsubscribe_url}>\n" if unsubscribe_url else ""
    return f"""\
From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>
To: {OURS}
Subject: Email Feedback Report for IP 192.0.2.10
Date: Wed, 02 Dec 2026 12:00:00 +0000
Message-ID: <arf-1234@arf.mail.yahoo.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"

--ARF
Content-Type: text/plain

This is an email abuse report for an email message received from IP 192.0.2.10.

--ARF
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 1
Original-Mail-From: <{OURS}>
Original-Rcpt-To: <{recipient}>
Arrival-Date: Wed, 02 Dec 2026 11:00:00 +0000

--ARF
Content-Type: message/rfc822

From: Mira Sommerfeld <{OURS}>
To: redacted@example.org
Subject: Impuls im Dezember
Message-ID: {message_id}
{unsubscribe}
Hallo

--ARF--
""".replace("\n", "\r\n").encode()


def mailto_unsubscribe(sender: str, token: str) -> bytes:
    """What Gmail sends when a reader presses its unsubscribe button (the List-Unsubscribe mailto)."""
    return f"""\
From: {sender}
To: {OURS}
Subject: Abmelden {token}
Date: Wed, 02 Dec 2026 12:30:00 +0000
Message-ID: <CAunsub{abs(hash(token)) % 10**8}@mail.gmail.com>
Content-Type: text/plain; charset="UTF-8"

This message was automatically generated by Gmail.
""".replace("\n", "\r\n").encode()


def plain_unsubscribe(sender: str) -> bytes:
    return f"""\
From: {sender}
To: {OURS}
Subject: abmelden
Date: Wed, 02 Dec 2026 12:31:00 +0000
Message-ID: <plain-unsub-{sender}>
Content-Type: text/plain; charset="UTF-8"

Bitte nehmen Sie mich aus dem Verteiler. Danke
""".replace("\n", "\r\n").encode()


def out_of_office(sender: str, message_id: str) -> bytes:
    return f"""\
From: {sender}
To: {OURS}
Subject: Abwesenheitsnotiz: Impuls im Dezember
Date: Wed, 02 Dec 2026 09:05:00 +0100
Message-ID: <ooo-{sender}>
In-Reply-To: {message_id}
Auto-Submitted: auto-replied
Content-Type: text/plain; charset="UTF-8"

Ich bin bis zum 4. Januar nicht im Büro.
""".replace("\n", "\r\n").encode()


SECRET_TEXT = "Mir geht es seit der Trennung sehr schlecht, ich schlafe kaum noch."


def human_reply(sender: str, message_id: str) -> bytes:
    return f"""\
From: Anna Müller <{sender}>
To: {OURS}
Subject: Re: Impuls im Dezember
Date: Wed, 02 Dec 2026 20:15:00 +0100
Message-ID: <reply-{sender}>
In-Reply-To: {message_id}
References: {message_id}
Content-Type: text/plain; charset="UTF-8"

Liebe Mira,

{SECRET_TEXT} Dein Impuls hat mir gutgetan.

Anna
""".replace("\n", "\r\n").encode()


def unrelated(n: int = 0) -> bytes:
    return f"""\
From: Steuerberater Klein <kanzlei@klein.example>
To: {OURS}
Subject: Unterlagen für 2026 ({n})
Date: Wed, 02 Dec 2026 08:00:00 +0100
Message-ID: <unrelated-{n}@klein.example>
Content-Type: text/plain; charset="UTF-8"

Bitte senden Sie uns die Belege bis Ende des Monats.
""".replace("\n", "\r\n").encode()


def broken_mime() -> bytes:
    return b"""\
From: someone@example.net\r
To: impuls@praxis.example.org\r
Subject: =?utf-8?q?kaputt\r
MIME-Version: 1.0\r
Content-Type: multipart/mixed; boundary=\r
\r
--\r
Content-Type: text/plain; charset=unknown-8bit\r
Content-Transfer-Encoding: base64\r
\r
!!!not base64!!!\r
"""


def large_reply(sender: str, message_id: str, megabytes: int = 20) -> bytes:
    head = human_reply(sender, message_id).split(b"\r\n\r\n", 1)[0]
    head = head.replace(b'Content-Type: text/plain; charset="UTF-8"',
                        b'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64')
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"
    return head + b"\r\n\r\n" + line * (megabytes * 1_000_000 // len(line))
