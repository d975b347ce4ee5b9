//! The zeo.conf parser and its mapping: every construct, every refusal with its line.
