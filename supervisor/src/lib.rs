//! zeo-supervisor: the failover supervisor (issue 6). Empty until then.
