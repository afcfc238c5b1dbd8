"""Re-broadcast: each accepted telegram, decrypted, on a local TCP port for other P1 readers.

What a client reads is exactly a plaintext meter's P1 port (telegrams with their CRC), so
DSMR-reader or any DSMR parser can share the one meter without its key.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any, Final, NamedTuple, cast, override

from .const import CONF_REBROADCAST_ALL_INTERFACES, CONF_REBROADCAST_PORT, LOGGER

# A client this far behind is not reading: it is dropped rather than let its backlog grow in
# Home Assistant's memory. With the kernel's buffer (set to this too, which Linux doubles) that
# is about 130 telegrams of 1.5 kB: some 20 minutes at the meter's pace.
MAX_CLIENT_BUFFER: Final = 64 * 1024
LOCALHOST: Final = "127.0.0.1"
# IPv4 only: binding "::" fails outright where IPv6 is disabled, common in containers.
ALL_INTERFACES: Final = "0.0.0.0"  # noqa: S104 - only when the user asks for it


class Address(NamedTuple):
    """Where the telegrams are offered."""

    host: str
    port: int


def listen_address(options: Mapping[str, Any]) -> Address | None:
    """The address an entry's options ask for; None when re-broadcasting is off."""
    port = options.get(CONF_REBROADCAST_PORT)
    if port is None:
        return None
    host = ALL_INTERFACES if options.get(CONF_REBROADCAST_ALL_INTERFACES) else LOCALHOST
    return Address(host, int(port))


class _Client(asyncio.Protocol):
    """One connected reader; anything it sends is ignored."""

    _transport: asyncio.WriteTransport

    def __init__(self, clients: set[asyncio.WriteTransport]) -> None:
        self._clients = clients

    @override
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transports write as well as read.
        self._transport = cast(asyncio.WriteTransport, transport)
        # The kernel would otherwise grow its own buffer to megabytes for a client that does not
        # read: bounded too, a stuck client is found in minutes, not days.
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_CLIENT_BUFFER)
        self._clients.add(self._transport)

    @override
    def connection_lost(self, exc: Exception | None) -> None:
        self._clients.discard(self._transport)


class Rebroadcaster:
    """A TCP server that writes each published telegram to every connected client.

    Writes never wait: a slow client's bytes queue in its transport, up to MAX_CLIENT_BUFFER.
    """

    def __init__(
        self, server: asyncio.Server, clients: set[asyncio.WriteTransport], address: Address
    ) -> None:
        self._server = server
        self._clients = clients
        self.address = address
        # The port bound, which is the one asked for unless that was 0 (any free port).
        self.port: int = server.sockets[0].getsockname()[1]
        self.dropped = 0

    @classmethod
    async def start(cls, address: Address) -> Rebroadcaster:
        """Listen on address; OSError when it cannot be bound (in use, not allowed)."""
        clients: set[asyncio.WriteTransport] = set()
        server = await asyncio.get_running_loop().create_server(
            lambda: _Client(clients), address.host, address.port
        )
        return cls(server, clients, address)

    @property
    def clients(self) -> int:
        """How many clients are connected."""
        return len(self._clients)

    def publish(self, telegram: bytes) -> None:
        """Send a telegram to every client; drop the clients that stopped reading."""
        for transport in tuple(self._clients):
            if transport.get_write_buffer_size() + len(telegram) > MAX_CLIENT_BUFFER:
                self._clients.discard(transport)
                transport.abort()
                self.dropped += 1
                LOGGER.debug("Dropped a re-broadcast client that stopped reading")
            else:
                transport.write(telegram)

    async def close(self) -> None:
        """Stop listening and disconnect every client."""
        self._server.close()
        self._server.abort_clients()
        await self._server.wait_closed()

    def as_dict(self) -> dict[str, Any]:
        """The JSON view used by diagnostics."""
        return {"port": self.port, "clients": self.clients, "dropped": self.dropped}


async def async_port_free(address: Address) -> bool:
    """Whether address can be listened on now (checked by binding it, then letting it go)."""
    try:
        broadcaster = await Rebroadcaster.start(address)
    except OSError:
        return False
    await broadcaster.close()
    return True


async def async_start(options: Mapping[str, Any]) -> Rebroadcaster | None:
    """The broadcaster an entry's options ask for; None when off or the port can't be bound.

    A busy port must not keep the meter's entities from working: it is logged, not raised.
    """
    address = listen_address(options)
    if address is None:
        return None
    try:
        return await Rebroadcaster.start(address)
    except OSError as err:
        LOGGER.warning("Cannot re-broadcast telegrams on %s:%s: %s", *address, err)
        return None
