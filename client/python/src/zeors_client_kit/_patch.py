"""The one place that patches ZEO: `Protocol.connection_made` and `ClientIO.__init__` of
ZEO.asyncio.client, whose layout is the same in ZEO 5.4 and 6.x (checked before patching)."""
import importlib.metadata
import inspect
import logging
import socket
import threading

from ._settings import Settings

logger = logging.getLogger("zeors_client_kit")


class UnsupportedZEO(RuntimeError):
    """The installed ZEO is not one whose client layout the kit knows."""


_lock = threading.Lock()
_settings = None  # the Settings in force, None when not installed
_originals = None  # (Protocol.connection_made, ClientIO.__init__) before patching
_logged_socket = False  # the first socket's options are logged at INFO, the rest at DEBUG


def _zeo_client_module():
    """ZEO.asyncio.client once checked to have the layout the patch expects."""
    try:
        version = importlib.metadata.version("ZEO")
    except importlib.metadata.PackageNotFoundError:
        raise UnsupportedZEO("zeors_client_kit: ZEO is not installed") from None
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise UnsupportedZEO(f"zeors_client_kit: cannot read ZEO's version {version!r}") from None
    if not ((major == 5 and minor >= 4) or major == 6):
        raise UnsupportedZEO(f"zeors_client_kit supports ZEO 5.4 and 6.x, found ZEO {version}")
    import ZEO.asyncio.client as client

    protocol = getattr(client, "Protocol", None)
    client_io = getattr(client, "ClientIO", None)
    problems = []
    if protocol is None or "connection_made" not in vars(protocol):
        problems.append("ZEO.asyncio.client.Protocol.connection_made")
    if client_io is None or "register_failed" not in vars(client_io):
        problems.append("ZEO.asyncio.client.ClientIO.register_failed")
    elif "register_failed_poll" not in inspect.signature(client_io.__init__).parameters:
        problems.append("ClientIO(register_failed_poll=...)")
    if problems:
        raise UnsupportedZEO(
            f"zeors_client_kit: ZEO {version} lacks {', '.join(problems)}; refusing to patch it")
    return client


def _set_socket_options(transport, addr):
    """Keepalive and user timeout on a ZEO client's TCP socket (unix sockets are left alone)."""
    global _logged_socket
    s = _settings
    sock = transport.get_extra_info("socket")
    if s is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    applied = []

    def opt(level, name, value, shown):
        number = getattr(socket, name, None)
        if number is None:  # not on this platform: say so rather than pretend
            applied.append(f"{name} unavailable")
            return
        sock.setsockopt(level, number, value)
        applied.append(f"{name}={shown}")

    opt(socket.SOL_SOCKET, "SO_KEEPALIVE", 1, "1")
    opt(socket.IPPROTO_TCP, "TCP_KEEPIDLE", round(s.keepalive_idle), f"{round(s.keepalive_idle)}s")
    opt(socket.IPPROTO_TCP, "TCP_KEEPINTVL", round(s.keepalive_interval), f"{round(s.keepalive_interval)}s")
    opt(socket.IPPROTO_TCP, "TCP_KEEPCNT", s.keepalive_count, str(s.keepalive_count))
    if s.user_timeout > 0:
        ms = round(s.user_timeout * 1000)
        opt(socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", ms, f"{ms}ms")
    level = logging.DEBUG if _logged_socket else logging.INFO
    _logged_socket = True
    logger.log(level, "zeors_client_kit: ZEO client socket to %r: %s", addr, ", ".join(applied))


def _patch(client):
    protocol, client_io = client.Protocol, client.ClientIO
    original_made, original_init = protocol.connection_made, client_io.__init__

    def connection_made(self, transport):
        _set_socket_options(transport, self.addr)
        return original_made(self, transport)

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        # Registration runs later on this loop, so the value is in place before any refusal.
        s = _settings
        if s is not None and s.read_only_retry is not None and s.is_ha(self.addrs):
            self.register_failed_poll = s.read_only_retry
            logger.info("zeors_client_kit: ZEO client of %r retries %ss after a read-only refusal",
                        self.addrs, s.read_only_retry)

    connection_made.__wrapped__ = original_made
    __init__.__wrapped__ = original_init
    protocol.connection_made = connection_made
    client_io.__init__ = __init__
    return original_made, original_init


def install(settings=None, **values):
    """Enable the kit for ZEO clients opened from now on (`install(user_timeout=8)` or
    `install(Settings(...))`). Calling it again replaces the values. Raises UnsupportedZEO on a
    ZEO whose layout is unknown, ValueError on a bad value."""
    global _settings, _originals
    if settings is None:
        settings = Settings(**values)
    elif values:
        raise TypeError("zeors_client_kit.install: pass Settings or keyword values, not both")
    with _lock:
        if _originals is None:
            _originals = _patch(_zeo_client_module())
        _settings = settings
    logger.info("zeors_client_kit: enabled: %s", settings)
    return settings


def uninstall():
    """Restore ZEO as it was (clients already open keep their socket options)."""
    global _settings, _originals
    with _lock:
        if _originals is not None:
            import ZEO.asyncio.client as client

            client.Protocol.connection_made, client.ClientIO.__init__ = _originals
            _originals = None
        _settings = None


def installed() -> bool:
    return _settings is not None


def settings():
    """The Settings in force, or None."""
    return _settings
