"""ZConfig glue. `%import zeors_client_kit` reads component.xml, which names this module as its
datatype prefix, so ZConfig imports it while reading the schema: that import enables the kit
with its defaults (the operator's explicit act). Nothing else imports this module."""
import ZODB.config

from . import _patch
from ._settings import Settings


class KitStorage(ZODB.config.BaseConfig):
    """`<zeors-client-kit>` around a storage section: the kit with these values, then the
    wrapped storage opened as it would be without the section."""

    def open(self, database_name="unnamed", databases=None):
        c = self.config
        _patch.install(Settings(
            keepalive_idle=c.keepalive_idle,
            keepalive_interval=c.keepalive_interval,
            keepalive_count=c.keepalive_count,
            user_timeout=c.user_timeout,
            read_only_retry=c.read_only_retry,
            ha_addresses=tuple(a.address for a in c.ha_addresses),
        ))
        return c.base.open()


if not _patch.installed():
    _patch.install()
