#!/usr/bin/python3
"""The "outside" host of the extnet test cluster (slurm-test-env).

Runs in the xn-out network namespace and tells every client which source
address and port it saw, so tests can check that a job's traffic left the
cluster through the NAT gateway (and with which port). It answers on both
families: TCP, UDP, UDP-Lite, HTTP and ICMP echo on the IPv4 address (--bind)
and, each on a socket of its own, on the IPv6 one (--bind6); DNS on IPv4 only.
An IPv6 client's SEEN line has its IPv6 address ("SEEN tcp 2001:db8::101 20001"):

  TCP  7000  on connect: writes "SEEN tcp <src_ip> <src_port>\n" and closes
  UDP  7001  answers every datagram with "SEEN udp <src_ip> <src_port>\n"
  UDP-Lite 7002  (IP protocol 136) answers likewise "SEEN udplite <src_ip> <src_port>\n":
             a protocol that is neither TCP, UDP nor ICMP, for the fail-closed tests;
             left out with a warning when the kernel has no UDP-Lite
  ICMP       every echo request to the bind address is logged as "SEEN icmp <src_ip> <id>"
             (the echo identifier, which NAT translates like a port); the kernel answers it.
             ICMPv6 echo requests to --bind6 likewise, also as "SEEN icmp"
  DNS  UDP 53  a tiny authoritative answer: NAME_A (outside.extnet.test) has the A record
             of the bind address (or --dns-address); every other name is NXDOMAIN, other
             types of NAME_A have no answer; every query is logged as "SEEN dns <src_ip>
             <src_port>" (the netns jobs' resolver in the name-resolution test)
  HTTP 8080  GET any path: 200, body "SEEN http <src_ip> <src_port>\n"
             GET /bytes/N: 200, a body of exactly N bytes (N <= 1 GiB; accounting tests)
             POST any path: reads the body, 200, body "RECEIVED <n>\n"

Every SEEN line is also appended, with a UTC timestamp, to the log file given
with --log. Standard library only.
"""

import argparse
import datetime
import struct
import http.server
import socket
import socketserver
import sys
import threading

# socket.IPPROTO_UDPLITE exists only in newer Pythons; the number is the kernel's
IPPROTO_UDPLITE = getattr(socket, "IPPROTO_UDPLITE", 136)

# sources whose ICMP echo requests are not logged (--icmp-ignore-from): the gateways' own
# addresses, whose path check pings this host every second
IGNORED = set()
LOG_LOCK = threading.Lock()
LOG_PATH = None


def seen(proto, addr):
    """Build the SEEN line for a peer address and record it in the log."""
    line = "SEEN %s %s %d\n" % (proto, addr[0], addr[1])
    if LOG_PATH:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        with LOG_LOCK, open(LOG_PATH, "a", encoding="utf-8") as log:
            log.write("%s %s" % (stamp, line))
    return line


class TcpHandler(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            self.request.sendall(seen("tcp", self.client_address).encode())
        except OSError:
            pass


class UdpHandler(socketserver.BaseRequestHandler):
    PROTO = "udp"

    def handle(self):
        _data, sock = self.request
        try:
            sock.sendto(seen(self.PROTO, self.client_address).encode(), self.client_address)
        except OSError:
            pass


class UdpliteHandler(UdpHandler):
    PROTO = "udplite"


NAME_A = "outside.extnet.test"
DNS_ADDRESS = "203.0.113.10"


def dns_answer(query):
    """The response to one DNS query (RFC 1035), or None when it is not one."""
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, i = [], 12
    while i < len(query) and query[i] != 0:
        n = query[i]
        labels.append(query[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    if i + 5 > len(query):
        return None
    question = query[12 : i + 5]
    qtype, qclass = struct.unpack("!HH", query[i + 1 : i + 5])
    name = ".".join(labels).lower().rstrip(".")
    known = name == NAME_A
    answers = b""
    if known and qtype == 1 and qclass == 1:
        # a pointer to the question's name, type A, class IN, TTL 60, 4 bytes of address
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(DNS_ADDRESS)
    rcode = 0 if known else 3
    # QR, AA, RD copied, RA
    rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
    header = struct.pack("!HHHHHH", qid, rflags, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


class DnsHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        answer = dns_answer(data)
        if answer is None:
            return
        seen("dns", self.client_address)
        try:
            sock.sendto(answer, self.client_address)
        except OSError:
            pass


class HttpHandler(http.server.BaseHTTPRequestHandler):
    server_version = "xn-outside/1"

    def do_GET(self):  # noqa: N802 (http.server naming)
        if self.path.startswith("/bytes/"):
            return self.send_bytes(self.path[len("/bytes/"):])
        body = seen("http", self.client_address).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_bytes(self, count):
        """Answer with exactly int(count) bytes, written in chunks."""
        try:
            n = int(count)
        except ValueError:
            n = -1
        if not 0 <= n <= 1 << 30:
            self.send_error(400, "GET /bytes/N needs 0 <= N <= 1073741824")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"x" * 65536
        try:
            while n > 0:
                self.wfile.write(chunk[:n])
                n -= min(n, len(chunk))
        except OSError:
            pass

    def do_POST(self):  # noqa: N802 (http.server naming)
        left = int(self.headers.get("Content-Length") or 0)
        got = 0
        while left > 0:
            data = self.rfile.read(min(left, 65536))
            if not data:
                break
            got += len(data)
            left -= len(data)
        body = ("RECEIVED %d\n" % got).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass


class TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class UdpServer(socketserver.ThreadingUDPServer):
    allow_reuse_address = True
    daemon_threads = True


class UdpliteServer(UdpServer):
    """A datagram server on a UDP-Lite socket: socketserver makes plain UDP ones."""

    def __init__(self, addr, handler):
        super().__init__(addr, handler, bind_and_activate=False)
        self.socket.close()
        self.socket = socket.socket(self.address_family, self.socket_type, IPPROTO_UDPLITE)
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise


class IcmpEchoLog:
    """Logs every ICMP echo request to `bind` from a raw socket; the kernel answers them."""

    def __init__(self, bind):
        self.bind = bind
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)

    def serve_forever(self):
        while True:
            data, addr = self.socket.recvfrom(65535)
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 8:
                continue
            icmp_type, _code, _sum, ident, _seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            dst = socket.inet_ntoa(data[16:20])
            if icmp_type == 8 and self.bind in ("0.0.0.0", dst) and addr[0] not in IGNORED:
                seen("icmp", (addr[0], ident))


class HttpServer(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class Ipv6Only:
    """A server on an IPv6 socket that takes IPv6 only: IPv4 clients stay with the IPv4
    socket, so their SEEN lines never show an IPv4-mapped address (::ffff:a.b.c.d)."""

    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


class TcpServer6(Ipv6Only, TcpServer):
    pass


class UdpServer6(Ipv6Only, UdpServer):
    pass


class UdpliteServer6(Ipv6Only, UdpliteServer):
    pass


class HttpServer6(Ipv6Only, HttpServer):
    pass


class Icmp6EchoLog:
    """Logs every ICMPv6 echo request to `bind` (the raw socket is bound to it: the kernel
    hands it only packets to that address, any when "::"); the kernel answers them. An
    ICMPv6 raw socket gets the ICMPv6 message without the IPv6 header."""

    def __init__(self, bind):
        self.socket = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        self.socket.bind((bind, 0))

    def serve_forever(self):
        while True:
            data, addr = self.socket.recvfrom(65535)
            if len(data) < 8:
                continue
            icmp_type, _code, _sum, ident, _seq = struct.unpack("!BBHHH", data[:8])
            if icmp_type == 128 and addr[0] not in IGNORED:
                seen("icmp", (addr[0], ident))


def main():
    global LOG_PATH
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--bind6", default="::",
                    help="the IPv6 address to answer on (default ::, all; '' for none)")
    ap.add_argument("--tcp-port", type=int, default=7000)
    ap.add_argument("--udp-port", type=int, default=7001)
    ap.add_argument("--http-port", type=int, default=8080)
    ap.add_argument("--udplite-port", type=int, default=7002)
    ap.add_argument("--dns-port", type=int, default=53)
    ap.add_argument("--dns-address", help="the A record of %s (default: --bind)" % NAME_A)
    ap.add_argument("--icmp-ignore-from", default="",
                    help="comma-separated sources whose ICMP echo requests are not logged")
    ap.add_argument("--log", help="append every SEEN line with a timestamp here")
    args = ap.parse_args()
    LOG_PATH = args.log
    global DNS_ADDRESS
    DNS_ADDRESS = args.dns_address or (args.bind if args.bind != "0.0.0.0" else DNS_ADDRESS)
    IGNORED.update(a for a in args.icmp_ignore_from.split(",") if a)

    servers = [
        TcpServer((args.bind, args.tcp_port), TcpHandler),
        UdpServer((args.bind, args.udp_port), UdpHandler),
        HttpServer((args.bind, args.http_port), HttpHandler),
        UdpServer((args.bind, args.dns_port), DnsHandler),
    ]
    listening = "tcp/%d udp/%d http/%d dns/%d" % (
        args.tcp_port, args.udp_port, args.http_port, args.dns_port)
    try:
        servers.append(UdpliteServer((args.bind, args.udplite_port), UdpliteHandler))
        listening += " udplite/%d" % args.udplite_port
    except OSError as exc:
        print("outside-server: no UDP-Lite listener (%s)" % exc, file=sys.stderr, flush=True)
    servers.append(IcmpEchoLog(args.bind))
    listening += " icmp-echo"
    if args.bind6:
        servers += [
            TcpServer6((args.bind6, args.tcp_port), TcpHandler),
            UdpServer6((args.bind6, args.udp_port), UdpHandler),
            HttpServer6((args.bind6, args.http_port), HttpHandler),
            Icmp6EchoLog(args.bind6),
        ]
        listening += "; on [%s] tcp/%d udp/%d http/%d icmp6-echo" % (
            args.bind6, args.tcp_port, args.udp_port, args.http_port)
        try:
            servers.append(UdpliteServer6((args.bind6, args.udplite_port), UdpliteHandler))
            listening += " udplite/%d" % args.udplite_port
        except OSError as exc:
            print("outside-server: no IPv6 UDP-Lite listener (%s)" % exc, file=sys.stderr,
                  flush=True)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    print("outside-server: listening on %s %s" % (args.bind, listening), flush=True)
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
