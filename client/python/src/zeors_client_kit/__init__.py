"""zeors_client_kit: timeouts that ZEO's client lacks, for Python clients of a zeo-rs HA service.

ZEO's client (5.4 and 6.x) sets no TCP keepalive and no TCP_USER_TIMEOUT, so a connection to a
server host that vanished without a reset (link cut, node lost, a DNAT pointing at a dead pod)
hangs until the next heartbeat and then TCP's retransmission timeout (about 15 minutes). After a
read-only server refused a writable client it waits 9 s before trying again, which is the wait a
planned switchover meets. The kit sets, on ZEO client sockets only:

- SO_KEEPALIVE with TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT (default 5 s / 2 s / 3),
- TCP_USER_TIMEOUT (default 10 s),
- a shorter wait after a read-only refusal (default 0.5 s, plus ZEO's own 0-1 s jitter), for
  clients whose address is an HA service (every client unless `ha_addresses` names some).

Importing this package changes nothing. It is enabled by one of:

- `%import zeors_client_kit` in zope.conf or any ZConfig file: the defaults, for every ZEO client;
  a `<zeors-client-kit>` section around a storage section sets other values (see component.xml);
- `zeors_client_kit.install(...)` in Python, before the ClientStorage is opened.

The ZEO patch lives in one place, `zeors_client_kit._patch`, which refuses a ZEO whose layout it
does not know (UnsupportedZEO) rather than guess.
"""
from ._patch import UnsupportedZEO, install, installed, settings, uninstall
from ._settings import Settings

__version__ = "0.1.0"
__all__ = ["Settings", "UnsupportedZEO", "install", "installed", "settings", "uninstall"]
