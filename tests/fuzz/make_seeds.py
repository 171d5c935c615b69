#!/usr/bin/env python3
"""Writes the fuzz target's seed corpus (corpus/*.bin): valid streams of each
kind a peer sends, and a few near-misses. Run it again after a protocol change."""
import os
import struct

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF

def handshake(role, version=2):
    head = b"RFRK" + struct.pack(">HBBI", version, role, 0, 0)
    return head + struct.pack(">I", crc32c(head))

def frame(kind, payload):
    head = struct.pack(">HHI", kind, 0, len(payload))
    return head + struct.pack(">I", crc32c(payload, crc32c(head))) + payload

def s(text):
    return struct.pack(">I", len(text)) + text.encode()

PROGRAM, SENDER, AGENT = 1, 2, 3
seeds = {
    "fork_request": bytes([0x05]) + handshake(PROGRAM) + frame(2, s("b:7000") + struct.pack(">QI", 4242, 1)),
    "fork_reply": bytes([0x03]) + handshake(AGENT) + frame(3, bytes([1]) + s("0a1b2c3d") + s("b") + struct.pack(">I", 77)),
    "image": bytes([0x01]) + handshake(SENDER)
    + frame(16, s("a") + struct.pack(">IQ", 77, 4242) + s("pipe:[1]") + s("tty[8800:1a]") + s("") + struct.pack(">QI", 8, 1))
    + frame(17, s("pages-1.img") + struct.pack(">Q", 8)) + frame(18, b"\x00" * 8) + frame(19, b"")
    + frame(21, b"\x01\x02\x03\x04") + frame(22, b""),
    "child_life": bytes([0x00]) + frame(32, bytes([1]) + b"hello\n") + frame(32, bytes([2]) + b"oops\n")
    + frame(33, b"input") + frame(34, b"") + frame(36, struct.pack(">I", 15)) + frame(35, struct.pack(">I", 42)),
    "requests": bytes([0x00]) + frame(48, s("0a1b2c3d")) + frame(49, struct.pack(">I", 143))
    + frame(50, s("0a1b2c3d") + struct.pack(">I", 9)) + frame(51, b"") + frame(52, b"")
    + frame(53, struct.pack(">I", 1) + s("0a1b2c3d") + s("a") + struct.pack(">I", 7) + s("running") + struct.pack(">Q", 1500)),
    "probe": bytes([0x01]) + handshake(SENDER) + frame(30, b"")
    + frame(31, s("b") + struct.pack(">H", 2) + s("--no-lazy-pages")),
    "error": bytes([0x07]) + handshake(AGENT) + frame(1, struct.pack(">H", 13) + s("rfork: over a limit")),
    "other_version": bytes([0x01]) + handshake(SENDER, 99),
    "garbage": bytes([0x01]) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
}
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(here, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(here, name + ".bin"), "wb") as f:
        f.write(data)
