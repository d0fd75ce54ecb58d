"""
Header maps as filters see them: the request and response headers of an
L{Exchange} with their pseudo-headers, and plain maps (trailers, HTTP call
responses).

Names are matched case-insensitively and stored lower-case. Every write is
validated first: a filter can never put a name or value on the wire that
breaks HTTP framing.
"""

import re
from typing import List, Optional, Tuple

from twistgate.proxywasm.constants import Status

Pairs = List[Tuple[bytes, bytes]]

_TOKEN = re.compile(rb"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(rb"[\r\n\0]")
_isToken = _TOKEN.match
_findBadByte = _BAD_VALUE.search
_OK = Status.OK


def validName(name: bytes) -> bool:
    """
    @return: whether C{name} is an HTTP token (RFC 9110 field name).
    """
    return _isToken(name) is not None


def validValue(value: bytes) -> bool:
    """
    @return: whether C{value} can be sent as a field value (no CR, LF, NUL).
    """
    return _findBadByte(value) is None


class HeaderMap:
    """
    A list of header pairs with the map operations of the ABI. Subclasses add
    pseudo-headers backed by an exchange.

    @ivar writable: whether filters may change this map.
    """

    writable = True
    pseudoNames: Tuple[bytes, ...] = ()

    def __init__(self, pairs: Optional[Pairs] = None) -> None:
        self._pairs = pairs if pairs is not None else []

    def realPairs(self) -> Pairs:
        """
        @return: the list of non-pseudo pairs (the live list, not a copy).
        """
        return self._pairs

    def setRealPairs(self, pairs: Pairs) -> None:
        """
        Replace the non-pseudo pairs.
        """
        self._pairs[:] = pairs

    def pseudo(self) -> Pairs:
        """
        @return: the pseudo-header pairs, in the order filters see them.
        """
        return []

    def setPseudo(self, name: bytes, value: bytes) -> int:
        """
        Change a pseudo-header.

        @return: a L{Status}.
        """
        return Status.BAD_ARGUMENT

    def pairs(self) -> Pairs:
        """
        @return: pseudo-headers first, then the headers in order.
        """
        return self.pseudo() + list(self.realPairs())

    def count(self) -> int:
        """
        @return: the number of real headers (pseudo-headers excluded, as
            Kong counts them).
        """
        return len(self.realPairs())

    def get(self, name: bytes) -> Optional[bytes]:
        """
        @return: the value of C{name}, repeated headers joined by C{","}, or
            L{None} if absent.
        """
        name = name.lower()
        if name.startswith(b":"):
            for key, value in self.pseudo():
                if key == name:
                    return value
            return None
        values = [value for key, value in self.realPairs() if key.lower() == name]
        if not values:
            return None
        return b",".join(values)

    def _check(self, name: bytes, value: Optional[bytes]) -> int:
        if not self.writable:
            return Status.BAD_ARGUMENT
        if value is not None and not validValue(value):
            return Status.BAD_ARGUMENT
        if name.startswith(b":"):
            return Status.OK if name in self.pseudoNames else Status.BAD_ARGUMENT
        return Status.OK if validName(name) else Status.BAD_ARGUMENT

    def _settable(self, name: bytes, value: bytes) -> bool:
        """
        @return: whether C{name} (lower-case) may be set to C{value} as a
            real header: the common case of a write, checked at once.
        """
        return self.writable and _isToken(name) is not None and _findBadByte(value) is None

    def _setPseudoChecked(self, name: bytes, value: bytes) -> int:
        """
        A write that is not L{_settable}: set a pseudo-header, or refuse.
        """
        status = self._check(name, value)
        if status != Status.OK:
            return status
        return self.setPseudo(name, value)

    def add(self, name: bytes, value: bytes) -> int:
        """
        Append a header (a pseudo-header is set instead).

        @return: a L{Status}.
        """
        name = name.lower()
        if not self._settable(name, value):
            return self._setPseudoChecked(name, value)
        self.realPairs().append((name, value))
        return _OK

    def replace(self, name: bytes, value: bytes) -> int:
        """
        Set a header to one value, adding it if absent.

        @return: a L{Status}.
        """
        name = name.lower()
        if not self._settable(name, value):
            return self._setPseudoChecked(name, value)
        pairs = self.realPairs()
        for index, (key, _) in enumerate(pairs):
            if key.lower() == name:
                break
        else:
            # Absent (a filter adding its own header): appended in place.
            pairs.append((name, value))
            return _OK
        replaced = pairs[:index]
        replaced.append((name, value))
        replaced += [(key, old) for key, old in pairs[index + 1:] if key.lower() != name]
        self.setRealPairs(replaced)
        return _OK

    def remove(self, name: bytes) -> int:
        """
        Remove every header called C{name}; absent names are fine.

        @return: a L{Status}.
        """
        name = name.lower()
        status = self._check(name, None)
        if status != Status.OK:
            return status
        if name.startswith(b":"):
            return Status.OK
        self.setRealPairs([(k, v) for k, v in self.realPairs() if k.lower() != name])
        return Status.OK

    def setPairs(self, pairs: Pairs) -> int:
        """
        Replace the whole map; pseudo-headers in C{pairs} are set, those
        missing keep their value. Nothing changes if any pair is invalid.

        @return: a L{Status}.
        """
        lowered = [(k.lower(), v) for k, v in pairs]
        for name, value in lowered:
            status = self._check(name, value)
            if status != Status.OK:
                return status
        real = []
        for name, value in lowered:
            if name.startswith(b":"):
                status = self.setPseudo(name, value)
                if status != Status.OK:
                    return status
            else:
                real.append((name, value))
        self.setRealPairs(real)
        return Status.OK


class ReadOnlyHeaderMap(HeaderMap):
    """
    A map filters may read but not change (HTTP call responses).
    """

    writable = False

    def __init__(self, pairs: Optional[Pairs] = None, pseudoPairs: Optional[Pairs] = None) -> None:
        super().__init__(pairs)
        self._pseudo = pseudoPairs or []

    def pseudo(self) -> Pairs:
        return list(self._pseudo)


class RequestHeaderMap(HeaderMap):
    """
    The request headers of an exchange, with C{:method}, C{:path} (both
    writable), C{:authority} (writable: the upstream C{Host}) and
    C{:scheme} (read-only: changing it is ignored, as in Kong).
    """

    pseudoNames = (b":method", b":path", b":authority", b":scheme")

    def __init__(self, exchange) -> None:
        self.exchange = exchange

    def realPairs(self) -> Pairs:
        return self.exchange.requestHeaders

    def setRealPairs(self, pairs: Pairs) -> None:
        self.exchange.requestHeaders[:] = pairs

    def pseudo(self) -> Pairs:
        exchange = self.exchange
        return [
            (b":path", exchange.path),
            (b":method", exchange.method),
            (b":scheme", exchange.scheme),
            (b":authority", exchange.authority),
        ]

    def setPseudo(self, name: bytes, value: bytes) -> int:
        if name == b":method":
            if not validName(value):
                return Status.BAD_ARGUMENT
            self.exchange.method = value.upper()
        elif name == b":path":
            if not value.startswith(b"/") or b" " in value:
                return Status.BAD_ARGUMENT
            self.exchange.path = value
        elif name == b":authority":
            if not value or b" " in value:
                return Status.BAD_ARGUMENT
            self.exchange.authority = value
        return Status.OK


class ResponseHeaderMap(HeaderMap):
    """
    The response headers of an exchange, with C{:status} (writable, three
    digits).
    """

    pseudoNames = (b":status",)

    def __init__(self, exchange) -> None:
        self.exchange = exchange

    def realPairs(self) -> Pairs:
        return self.exchange.responseHeaders

    def setRealPairs(self, pairs: Pairs) -> None:
        self.exchange.responseHeaders[:] = pairs

    def pseudo(self) -> Pairs:
        if not self.exchange.responseStatus:
            return []
        return [(b":status", b"%d" % (self.exchange.responseStatus,))]

    def setPseudo(self, name: bytes, value: bytes) -> int:
        if len(value) != 3 or not value.isdigit() or value.startswith(b"0"):
            return Status.BAD_ARGUMENT
        self.exchange.responseStatus = int(value)
        self.exchange.responseReason = None
        return Status.OK
