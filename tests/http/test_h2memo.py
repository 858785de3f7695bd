"""The HTTP/2 receive-side memos (services/http/h2memo.py), sans-IO: h2 as the client, the
lab's h2 state as the server; what they give must be what h2 alone gives."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
from h2.exceptions import ProtocolError
from hpack import Encoder, NeverIndexedHeaderTuple

from services.http.h2memo import CachingDecoder, h2_state

REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"www.lab.test"),
           (b":path", b"/a.html"), (b"user-agent", b"test")]


def test_a_block_means_what_the_table_says_now():
    """The same bytes after the table changed are other fields: decoded again."""
    encoder, decoder = Encoder(), CachingDecoder(65536)
    assert decoder.decode(encoder.encode([(":method", "GET"), ("x-a", "1")]), raw=True) == \
        [(b":method", b"GET"), (b"x-a", b"1")]  # inserts x-a: a list, not kept
    indices = encoder.encode([(":method", "GET"), ("x-a", "1")])  # now indices only
    first = decoder.decode(indices, raw=True)
    assert first == ((b":method", b"GET"), (b"x-a", b"1"))
    assert decoder.decode(indices, raw=True) is first  # kept
    decoder.decode(encoder.encode([("x-b", "2")]), raw=True)  # x-b goes first in the table
    again = encoder.encode([(":method", "GET"), ("x-b", "2")])
    assert again == indices  # the very same bytes...
    assert decoder.decode(again, raw=True) == ((b":method", b"GET"), (b"x-b", b"2"))  # ...now


def test_a_table_size_update_is_a_change():
    encoder, decoder = Encoder(), CachingDecoder(65536)
    decoder.decode(encoder.encode([("x-a", "1")]), raw=True)
    indices = encoder.encode([("x-a", "1")])
    assert decoder.decode(indices, raw=True) == ((b"x-a", b"1"),)
    encoder.header_table_size = 0  # the next block starts with a size update to 0
    decoder.decode(encoder.encode([(":method", "GET")]), raw=True)
    with pytest.raises(Exception, match="Invalid table index"):
        decoder.decode(indices, raw=True)  # its entry is gone: an error, not the kept fields


def pair(**client_options):
    server = h2_state()
    server.initiate_connection()
    client = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, **client_options))
    client.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # the SETTINGS acknowledgement
    return client, server


def requests(client, server, headers, count):
    got = []
    for _ in range(count):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, headers, end_stream=True)
        got += [e for e in server.receive_data(client.data_to_send())
                if isinstance(e, h2.events.RequestReceived)]
    return got


def test_repeated_heads_give_h2s_fields_each_in_its_own_list():
    client, server = pair()
    cookies = [*REQUEST, (b"cookie", b"a=1"), (b"cookie", b"b=2"),
               NeverIndexedHeaderTuple(b"authorization", b"secret")]
    got = requests(client, server, cookies, 5)
    assert [e.stream_id for e in got] == [1, 3, 5, 7, 9]
    for event in got:  # h2's normalization: the cookies joined; the never-indexed kept so
        assert event.headers == [*REQUEST, (b"authorization", b"secret"),
                                 (b"cookie", b"a=1; b=2")]
        assert isinstance(event.headers[-2], NeverIndexedHeaderTuple)
    got[0].headers.append((b"x", b"y"))  # one event's list is not the next one's
    assert requests(client, server, cookies, 1)[0].headers[-1] == (b"cookie", b"a=1; b=2")
    assert server.config.processed  # (the memo was used)


@pytest.mark.parametrize("bad", [(b"connection", b"keep-alive"), (b"te", b"gzip"),
                                 (b"Upper", b"case")])
def test_h2_still_refuses_an_invalid_head(bad):
    client, server = pair(validate_outbound_headers=False, normalize_outbound_headers=False)
    requests(client, server, REQUEST, 2)
    with pytest.raises(ProtocolError):
        requests(client, server, [*REQUEST, bad], 1)


def test_a_head_valid_as_a_request_is_checked_again_as_trailers():
    """The same fields (the very same kept tuple) with other validation flags: trailers
    may not carry pseudo-header fields (RFC 9113 8.1)."""
    client, server = pair(validate_outbound_headers=False, normalize_outbound_headers=False)
    requests(client, server, REQUEST, 2)  # kept, and processed as a request
    client.send_headers(5, REQUEST)
    client.send_data(5, b"body")
    client.send_headers(5, REQUEST, end_stream=True)  # as trailers: the same block
    with pytest.raises(ProtocolError, match="pseudo-header in trailer"):
        server.receive_data(client.data_to_send())
