"""A fault-injecting TCP proxy for cluster tests: one `Link` per direction between two nodes,
so that a test can cut a node off from the others (both directions) and heal it again.

A cut link closes the connections it carries and closes every new one at once, as a
network partition looks to a peer that retries (connection reset, then refused-like
failures). Each carried connection costs two threads, which end when either side closes.
"""

import socket
import threading

ACCEPT_POLL_S = 0.2
CONNECT_TIMEOUT_S = 1.0
CHUNK = 64 * 1024


class Link:
    """Accepts on a free loopback port and forwards to `target_port` unless cut."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.server.settimeout(ACCEPT_POLL_S)
        self.port = self.server.getsockname()[1]
        self.cut = False
        self.closed = False
        self.lock = threading.Lock()
        self.open = set()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.cut or self.closed:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port),
                                                    timeout=CONNECT_TIMEOUT_S)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(CHUNK)
                if not data or self.cut:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                self._drop(s)

    def _drop(self, s):
        with self.lock:
            self.open.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def set_cut(self, cut):
        """Cuts (True) or heals (False) the link; cutting closes what it carries."""
        self.cut = cut
        if cut:
            with self.lock:
                carried = list(self.open)
            for s in carried:
                self._drop(s)

    def close(self):
        self.closed = True
        self.set_cut(True)
        self.server.close()
        self.thread.join(5)


class Mesh:
    """A link for every ordered pair of `ids`: `port(a, b)` is where node a reaches node b,
    whose own listener is `listen[b]`."""

    def __init__(self, listen):
        self.links = {(a, b): Link(listen[b]) for a in listen for b in listen if a != b}

    def port(self, a, b):
        return self.links[(a, b)].port

    def isolate(self, node, cut=True):
        """Cuts (or heals) every link to and from `node`."""
        for (a, b), link in self.links.items():
            if node in (a, b):
                link.set_cut(cut)

    def close(self):
        for link in self.links.values():
            link.close()
