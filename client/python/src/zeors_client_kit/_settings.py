"""The kit's values, checked once so that the ZEO patch never meets a bad one."""
import dataclasses
from typing import Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the kit sets on ZEO client sockets (seconds unless said otherwise).

    The defaults bound how long a dead connection lasts: an idle one is probed after 5 s and
    dropped about 6 s later; one with unacknowledged data is dropped after 10 s."""

    keepalive_idle: float = 5.0
    keepalive_interval: float = 2.0
    keepalive_count: int = 3
    #: TCP_USER_TIMEOUT; 0 leaves the kernel's default (tcp_retries2, about 15 minutes).
    user_timeout: float = 10.0
    #: ZEO's register_failed_poll for clients of an HA service; None leaves ZEO's 9 s.
    read_only_retry: Optional[float] = 0.5
    #: (host, port) pairs that are HA services; empty: every ZEO client of the process.
    ha_addresses: Tuple[Tuple[str, int], ...] = ()

    def __post_init__(self):
        for name in ("keepalive_idle", "keepalive_interval"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"zeors_client_kit: {name} must be at least 1 s, got {getattr(self, name)!r}")
        if not (isinstance(self.keepalive_count, int) and self.keepalive_count >= 1):
            raise ValueError(f"zeors_client_kit: keepalive_count must be an integer >= 1, got {self.keepalive_count!r}")
        if not self.user_timeout >= 0:
            raise ValueError(f"zeors_client_kit: user_timeout must be >= 0, got {self.user_timeout!r}")
        if self.read_only_retry is not None and not self.read_only_retry >= 0:
            raise ValueError(f"zeors_client_kit: read_only_retry must be >= 0, got {self.read_only_retry!r}")
        addrs = tuple((str(h), int(p)) for h, p in self.ha_addresses)
        object.__setattr__(self, "ha_addresses", addrs)

    def is_ha(self, addrs) -> bool:
        """Whether a client with these ZEO addresses talks to an HA service."""
        if not self.ha_addresses:
            return True
        wanted = set(self.ha_addresses)
        return any(isinstance(a, tuple) and (str(a[0]), int(a[1])) in wanted for a in addrs)
