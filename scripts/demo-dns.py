#!/usr/bin/env python3
"""DNS helper for scripts/demo.sh (stdlib only).

  demo-dns.py serve ADDR        answer A queries on ADDR:53 (UDP): NAME -> an
                                address of 198.19.0.0/24 derived from NAME
  demo-dns.py query SERVER NAME ask SERVER for NAME's A records over UDP and
                                print "RCODE addr..." (TIMEOUT when no answer)
"""
import socket
import struct
import sys
import zlib

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def decode_question(msg):
    i, labels = 12, []
    while msg[i]:
        n = msg[i]
        labels.append(msg[i + 1:i + 1 + n].decode())
        i += 1 + n
    qtype, _ = struct.unpack("!HH", msg[i + 1:i + 5])
    return ".".join(labels), qtype, i + 5


def address_of(name):
    # api.example.com always gets 198.19.0.10; other names a stable address.
    if name.lower() == "api.example.com":
        return "198.19.0.10"
    return "198.19.0.%d" % (100 + zlib.crc32(name.lower().encode()) % 100)


def serve(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    while True:
        msg, peer = s.recvfrom(4096)
        try:
            name, qtype, end = decode_question(msg)
        except (IndexError, UnicodeDecodeError, struct.error):
            continue
        flags = 0x8180  # response, recursion desired + available
        answer = b""
        if qtype == 1:
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address_of(name))
        header = msg[:2] + struct.pack("!HHHHH", flags, 1, 1 if answer else 0, 0, 0)
        s.sendto(header + msg[12:end] + answer, peer)


def query(server, name):
    q = struct.pack("!HHHHHH", 0x4d6f, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(q, (server, 53))
    try:
        msg, _ = s.recvfrom(4096)
    except socket.timeout:
        print("TIMEOUT")
        return
    rcode = msg[3] & 0xF
    ancount = struct.unpack("!H", msg[6:8])[0]
    _, _, i = decode_question(msg)
    addrs = []
    for _ in range(ancount):
        if msg[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while msg[i]:
                i += 1 + msg[i]
            i += 1
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[i:i + 10])
        i += 10
        if rtype == 1:
            addrs.append(socket.inet_ntoa(msg[i:i + 4]))
        i += rdlen
    print(" ".join([RCODES.get(rcode, str(rcode))] + addrs))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "query":
        query(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
