"""Runs a Python program with the client kit (client/python, zeors_client_kit) enabled first, as
an operator adds it to a Zope process without changing the application:

    with_kit.py [--user-timeout S] SCRIPT ARGS...

The kit comes from client/python/src (an installed wheel works the same). Used by the netns
kit test and bench/dnat.py, around the unmodified zodb_writer.py and kit_idle_client.py."""
import os
import runpy
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "client", "python", "src"))

import zeors_client_kit  # noqa: E402


def main():
    args = sys.argv[1:]
    values = {}
    if args[:1] == ["--user-timeout"]:
        values["user_timeout"] = float(args[1])
        args = args[2:]
    zeors_client_kit.install(**values)
    sys.argv = args
    runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
