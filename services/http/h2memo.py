"""HTTP/2's receive side done once per distinct request head, with h2 still doing it.

Profiled under h2load, most of an HTTP/2 request's time went to h2 receiving it: HPACK
decoding the header block, then normalizing and validating the decoded fields. A client
asks for pages with near-identical heads - h2load the very same one, a browser the same
fields but the path - so both steps are memoized per connection, as pure functions of
what decides their result:

- decoding: a block's fields depend on its bytes and on the decoder's dynamic table. The
  table here counts its changes (CountedTable), so a block decoded before with the count
  as it is now decodes to the same fields - and, when that decoding did not change the
  table (a block of indices and unindexed literals: the common case once the first
  request has filled the table), it leaves the table as it is again. Only such blocks
  are kept; one that inserts into the table is decoded every time.
- processing (h2's normalization and validation, H2Stream._process_received_headers):
  a function of the decoded fields and the validation flags. What passed is kept with
  its result; what fails is never kept, so it fails again, with h2's own error.

Everything else - frames, stream states, flow control, errors - is h2's, unchanged.
Each memo is bounded in entries and in the size of what it keeps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import h2.connection
import h2.stream
from h2.config import H2Configuration
from hpack import Decoder, HeaderTuple
from hpack.table import HeaderTable

MEMO_ENTRIES = 16  # per connection, each memo; cleared when full (a new page's heads)
MEMO_BLOCK = 1024  # bytes of an encoded header block kept at most
MEMO_FIELDS = 8192  # bytes of decoded field names and values kept at most, a head


class CountedTable(HeaderTable):
    """hpack's dynamic table, counting its changes (entries added, size changed): the
    table's content is a function of those, so an unchanged count is an unchanged
    table."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.changes += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class CachingDecoder(Decoder):
    """hpack's Decoder, with the blocks that leave its table unchanged decoded once."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size)
        self.header_table: CountedTable = CountedTable()
        self.kept: dict[tuple[Any, ...], tuple[HeaderTuple, ...]] = {}

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        """The fields of `data`: a tuple when kept (the same one each time), else a list."""
        table = self.header_table
        # The limits the decoding checks are part of what decides its outcome.
        key = (bytes(data), raw, table.changes, self.max_header_list_size,
               self.max_allowed_table_size)
        kept = self.kept.get(key)
        if kept is not None:
            return kept
        fields = super().decode(data, raw)
        if table.changes != key[2] or len(key[0]) > MEMO_BLOCK or \
                sum(len(name) + len(value) for name, value in fields) > MEMO_FIELDS:
            return fields  # a list: MemoStream keeps only what is kept here (tuples)
        if len(self.kept) >= MEMO_ENTRIES:
            self.kept.clear()
        kept = self.kept[key] = tuple(fields)
        return kept


class LabConfiguration(H2Configuration):
    """h2's configuration, also holding its connection's memo of processed heads (h2
    hands the configuration to every stream it makes)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.processed: dict[tuple[Any, ...], tuple[tuple[Any, ...], list[Any]]] = {}


class MemoStream(h2.stream.H2Stream):
    """h2's stream, with the processing of a received head memoized (see the module's
    docstring)."""

    config: LabConfiguration

    def _process_received_headers(self, headers: Iterable[Any], header_validation_flags: Any,
                                  header_encoding: bool | str | None) -> list[Any]:
        if not isinstance(headers, tuple):  # not CachingDecoder's: nothing to key on
            return super()._process_received_headers(headers, header_validation_flags,
                                                     header_encoding)
        memo = self.config.processed
        # The decoder's kept tuple itself is the key (an identity, checked: the memo holds
        # it, so its id is no other object's): no hashing of the fields on every request.
        key = (id(headers), header_validation_flags, header_encoding)
        entry = memo.get(key)
        if entry is not None and entry[0] is headers:
            return list(entry[1])  # the event's own list: whoever takes it may change it
        kept = super()._process_received_headers(headers, header_validation_flags,
                                                 header_encoding)
        if len(memo) >= MEMO_ENTRIES:
            memo.clear()
        memo[key] = (headers, kept)
        return list(kept)


class LabH2State(h2.connection.H2Connection):
    """h2's connection with the memoizing decoder and streams, and tables that count
    their changes."""

    config: LabConfiguration

    def __init__(self, config: LabConfiguration) -> None:
        super().__init__(config=config)
        self.decoder = CachingDecoder(self.decoder.max_header_list_size)
        # Counted too, for the fast path's encoded blocks (http2.BlockCache); fresh, as
        # h2's own still is.
        self.encoder.header_table = CountedTable()

    def _begin_new_stream(self, stream_id: int, allowed_ids: Any) -> h2.stream.H2Stream:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        # h2 makes its H2Stream by name; a subclass adding one method and no state can
        # take its place as the stream is made, before anything has used it.
        stream.__class__ = MemoStream
        return stream


def h2_state() -> LabH2State:
    """A server's h2 connection state, as Twisted's H2Connection makes its own."""
    return LabH2State(LabConfiguration(client_side=False, header_encoding=None))
