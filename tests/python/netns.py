"""Network namespaces for cluster tests: each node runs in a namespace of its own, with an
address of its own on a bridge that the test process (in the root namespace) also sits on,
so that a test can cut nodes off from one another, the data plane (Kafka listeners:
replication, transaction markers) and the control plane (the metadata quorum) alike, while
its clients still reach every node.

A cut is a pair of blackhole routes (one in each namespace): packets between the two nodes
are dropped silently, as a network partition drops them, so connections already open stall
until their timeouts and new ones never complete. Only `ip` is needed (root, as in CI).
Everything created is named after this process and removed by `close`.
"""

import itertools
import os
import subprocess

_serials = itertools.count()


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Net:
    """A bridge and one namespace per node id in `ids`; `host[i]` is node i's address."""

    def __init__(self, ids):
        # Names of their own each time: a deleted namespace's devices go asynchronously.
        serial = next(_serials)
        tag = f"{os.getpid() % 10_000}x{serial}"
        subnet = 100 + (os.getpid() + serial) % 150
        self.bridge = f"slbr{tag}"
        self.ns = {i: f"sluice-{tag}-{i}" for i in ids}
        self.host = {i: f"10.78.{subnet}.{i}" for i in ids}
        self.cuts = set()
        ip("link", "add", self.bridge, "type", "bridge")
        try:
            ip("addr", "add", f"10.78.{subnet}.254/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for i in ids:
                veth = f"slv{tag}n{i}"
                ip("netns", "add", self.ns[i])
                ip("link", "add", veth, "type", "veth", "peer", "name", "eth0",
                   "netns", self.ns[i])
                ip("link", "set", veth, "master", self.bridge, "up")
                ip("-n", self.ns[i], "addr", "add", f"{self.host[i]}/24", "dev", "eth0")
                ip("-n", self.ns[i], "link", "set", "eth0", "up")
                ip("-n", self.ns[i], "link", "set", "lo", "up")
        except Exception:
            self.close()
            raise

    def wrapper(self, i):
        """The command prefix that runs a process in node i's namespace."""
        return ["ip", "netns", "exec", self.ns[i]]

    def cut(self, a, b):
        """Drops every packet between nodes a and b, both ways."""
        if (a, b) in self.cuts:
            return
        ip("-n", self.ns[a], "route", "add", "blackhole", f"{self.host[b]}/32")
        ip("-n", self.ns[b], "route", "add", "blackhole", f"{self.host[a]}/32")
        self.cuts.update({(a, b), (b, a)})

    def heal(self, a, b):
        if (a, b) not in self.cuts:
            return
        ip("-n", self.ns[a], "route", "del", "blackhole", f"{self.host[b]}/32")
        ip("-n", self.ns[b], "route", "del", "blackhole", f"{self.host[a]}/32")
        self.cuts -= {(a, b), (b, a)}

    def isolate(self, node, cut=True):
        """Cuts (or heals) node off from every other node; clients still reach it."""
        for other in self.ns:
            if other != node:
                (self.cut if cut else self.heal)(node, other)

    def close(self):
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
