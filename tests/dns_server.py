"""A real DNS server for tests: dnslib on a free UDP port of 127.0.0.1, answering from a zone text.

Follows CNAMEs inside the zone, says NXDOMAIN for names it does not know (or any name below
them), and never forwards anything: no query leaves loopback.
"""

from __future__ import annotations

import socket

from dnslib import QTYPE, RCODE, RR, DNSLabel
from dnslib.server import BaseResolver, DNSLogger, DNSServer


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ZoneResolver(BaseResolver):
    def __init__(self, zone: str) -> None:
        self.records = RR.fromZone(zone)

    def _exists(self, name: DNSLabel) -> bool:
        return any(rr.rname == name or rr.rname.matchSuffix(name) for rr in self.records)

    def resolve(self, request, handler):
        reply = request.reply()
        name, kind = request.q.qname, QTYPE[request.q.qtype]
        for _ in range(8):  # a CNAME chain, as far as the zone knows it
            answers = [rr for rr in self.records if rr.rname == name and QTYPE[rr.rtype] == kind]
            alias = [rr for rr in self.records if rr.rname == name and rr.rtype == QTYPE.CNAME]
            for rr in answers or alias:
                reply.add_answer(rr)
            if answers or not alias or kind == "CNAME":
                break
            name = alias[0].rdata.label
        if not reply.rr and not self._exists(request.q.qname):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class DnsServer:
    """Start with a zone, hand `address` to `newsletter doctor --nameserver`, stop at the end."""

    def __init__(self, zone: str) -> None:
        self.port = free_udp_port()
        self.address = f"127.0.0.1:{self.port}"
        self.server = DNSServer(ZoneResolver(zone), address="127.0.0.1", port=self.port,
                                logger=DNSLogger(logf=lambda _: None))

    def start(self) -> DnsServer:
        self.server.start_thread()
        return self

    def stop(self) -> None:
        self.server.stop()
        self.server.server.server_close()
