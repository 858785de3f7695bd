"""The capture fixture itself: it sees traffic once started, and finds malformed frames."""

from __future__ import annotations

import socket

from tests.conftest import need


def test_capture_sees_traffic_and_judges_dissection(capture):
    need("tshark")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        running = capture(f"udp port {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"\x12\x34\x01\x00\x00\x01", ("127.0.0.1", port))  # a DNS header cut short
        receiver.recv(100)
    assert len(running.read(f"udp.port == {port}")) == 1
    assert running.problems(decode_as=(f"udp.port=={port},dns",))  # malformed as DNS
