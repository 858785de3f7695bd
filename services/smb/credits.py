"""SMB2 credits (MS-SMB2 3.3.1.1, 3.3.1.2, 3.3.5.2.3, 3.3.5.2.5): which MessageIds a
client may use, and how many more it is granted. Sans-IO.

impacket grants whatever a request asks (CreditRequest echoed, up to 65535 a message)
and never looks at MessageId or CreditCharge: a client could keep any number of
requests in flight and replay ids. Here the connection keeps Windows' command sequence
window: ids granted and not yet used, at most MAX_CREDITS of them outstanding
(Windows Server starts at 512, Smb2CreditsMin; smbd's `smb2 max credits` is 8192). A
request outside the window ends the connection (as smbd does); a compound chain spends
one credit a message, so the window bounds chains too.
"""

from __future__ import annotations

MAX_CREDITS = 512
# How far ids may spread past the lowest unused one: a client that leaves an id unused
# forever gets no more credits once this far ahead (the used-id set stays this small).
MAX_SPREAD = 2 * MAX_CREDITS
CREDIT_BYTES = 65536  # what one credit pays for in a READ or WRITE (MS-SMB2 3.1.5.2)


class Window:
    """The MessageIds a connection may use: [low, high) minus those already used."""

    def __init__(self) -> None:
        self.low, self.high = 0, 1  # NEGOTIATE's id 0 is granted from the start
        self.used: set[int] = set()

    def begin_at(self, message_id: int) -> None:
        """A connection's first NEGOTIATE with another id than 0 starts the window there:
        impacket's client, handed an open NetBIOS session, starts at 1 (it counts a reply
        it never got). Only before any id was spent."""
        if (self.low, self.high) == (0, 1):
            self.low, self.high = message_id, message_id + 1

    @property
    def available(self) -> int:
        return self.high - self.low - len(self.used)

    def consume(self, message_id: int, charge: int) -> bool:
        """Spend ids message_id .. message_id + charge - 1; False (nothing spent) if any is
        not in the window."""
        ids = range(message_id, message_id + max(charge, 1))
        if ids.start < self.low or ids.stop > self.high or any(i in self.used for i in ids):
            return False
        self.used.update(ids)
        while self.low in self.used:
            self.used.discard(self.low)
            self.low += 1
        return True

    def offer(self, asked: int, promised: int = 0) -> int:
        """How many credits to grant a request that asked `asked` (at least one: a client
        left with none could send nothing), `promised` being granted already to the chain's
        earlier messages, not yet granted()."""
        room = min(MAX_CREDITS - self.available, MAX_SPREAD - (self.high - self.low)) - promised
        return max(0, min(max(asked, 1), room))

    def granted(self, count: int) -> None:
        """Credits a reply gave: more ids usable."""
        self.high += count


def needed(payload: int) -> int:
    """The CreditCharge a READ or WRITE of `payload` bytes needs (MS-SMB2 3.3.5.2.5)."""
    return max(1, (payload + CREDIT_BYTES - 1) // CREDIT_BYTES)
