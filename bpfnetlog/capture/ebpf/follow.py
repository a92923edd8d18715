"""The follower thread: keeps programs attached to every wanted UP interface of every namespace.

It rescans namespaces (/run/netns, /proc/*/ns/net) and their links every
`interval_s`: new ones are attached, vanished ones released. A namespace whose
links (index, name, up) did not change since it was synced costs an ioctl per
link, not a netlink dump (~40 us instead of ~3 ms per namespace). Polling instead
of netlink subscriptions, because a subscription socket would pin each
namespace and keep `ip netns del` from freeing it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bpfnetlog.capture.ebpf import netns
from bpfnetlog.capture.ebpf.netns import Link, Netns
from bpfnetlog.packets import Nic


class Hook(Protocol):
    """Something attached to one link; `needs_netns`: detach() must run inside its namespace."""

    needs_netns: bool

    def detach(self) -> None: ...


class Attacher(Protocol):
    """What a backend does per namespace and per link (eBPF: tc hooks; AF_PACKET: sockets)."""

    mode: str

    def open_ns(self, netns_id: int) -> Any: ...

    def attach(self, ns_handle: Any, link: Link, netns_id: int, nic_index: int) -> list[Hook]: ...

    def close_ns(self, ns_handle: Any) -> None: ...


@dataclass
class _NsState:
    ns: Netns
    netns_id: int
    handle: Any
    links: dict[int, tuple[Link, list[Hook]]] = field(default_factory=dict)


class Follower(threading.Thread):
    """Attach/detach loop; `ready` is set after the first scan (its error, if any, in `error`)."""

    def __init__(self, attacher: Attacher, on_nic: Callable[[int, Nic], int],
                 ifaces: list[str] | None, namespaces: list[str] | None, interval_s: float):
        super().__init__(name="bpfnetlog-follow", daemon=True)
        self._attacher, self._on_nic = attacher, on_nic
        self._ifaces, self._namespaces = ifaces, namespaces
        self._interval = interval_s
        self._state: dict[int, _NsState] = {}
        self._synced: dict[int, tuple] = {}  # netns inode -> netns.link_states() at its last full sync
        self._next_id = 1
        self._quit = threading.Event()
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.errors: list[str] = []  # per-interface failures, reported once each

    def run(self) -> None:
        try:
            self.scan()
        except BaseException as e:  # reported to start() through `error`
            self.error = e
            self.ready.set()
            self._release_all()
            return
        self.ready.set()
        while not self._quit.wait(self._interval):
            try:
                self.scan()
            except Exception as e:  # keep following; the next scan may succeed
                self._note(f"scan failed: {e}")
        self._release_all()

    def stop(self) -> None:
        self._quit.set()
        self.join()

    def attached(self) -> list[tuple[Netns, Link]]:
        with self._lock:
            return [(s.ns, link) for s in self._state.values() for link, _ in s.links.values()]

    def scan(self) -> None:
        found = netns.discover()
        if self._namespaces:
            found = {ino: ns for ino, ns in found.items() if ns.matches(self._namespaces)}
        for ino in [i for i in self._state if i not in found]:
            self._release_ns(self._state[ino], inside=False)
        self._synced = {ino: states for ino, states in self._synced.items() if ino in found}
        for ns in found.values():
            try:
                with netns.entered(ns) as ok:
                    if ok:
                        states = netns.link_states()
                        if self._synced.get(ns.ino) != states:  # else nothing to attach or release
                            self._synced.pop(ns.ino, None)
                            if self._sync(ns, netns.links()):
                                self._synced[ns.ino] = states
            except OSError as e:  # one namespace failing must not stop the others
                self._note(f"{ns.label}: {e}")

    def _sync(self, ns: Netns, links: list[Link]) -> bool:
        """Attach wanted links, release others; False if one failed to attach (retried next scan)."""
        wanted = {l.ifindex: l for l in links if l.up and (not self._ifaces or l.name in self._ifaces)}
        st = self._state.get(ns.ino)
        if st is None:
            if not wanted:
                return True
            st = _NsState(ns, self._next_id, self._attacher.open_ns(self._next_id))
            self._next_id += 1
            with self._lock:
                self._state[ns.ino] = st
        for ifindex, (old, hooks) in list(st.links.items()):
            if ifindex not in wanted or wanted[ifindex].name != old.name:
                for h in hooks:
                    h.detach()
                with self._lock:
                    del st.links[ifindex]
        for ifindex, link in wanted.items():
            if ifindex not in st.links:
                self._attach(st, link)
        return all(ifindex in st.links for ifindex in wanted)

    def _attach(self, st: _NsState, link: Link) -> None:
        nic = Nic(name=link.name, mac=link.mac, ifindex=link.ifindex, netns=st.ns.label,
                  virtual=link.virtual, host_network=st.ns.host)
        try:
            hooks = self._attacher.attach(st.handle, link, st.netns_id, self._on_nic(st.netns_id, nic))
        except OSError as e:
            self._note(f"{st.ns.label}/{link.name}: {e}")
            return
        with self._lock:
            st.links[link.ifindex] = (link, hooks)

    def _release_ns(self, st: _NsState, inside: bool) -> None:
        """Detach everything of one namespace; hooks that need it only from inside (ifindex is per-ns)."""
        for _, hooks in st.links.values():
            for h in hooks:
                if inside or not h.needs_netns:
                    h.detach()
        self._attacher.close_ns(st.handle)
        with self._lock:
            self._state.pop(st.ns.ino, None)

    def _release_all(self) -> None:
        for st in list(self._state.values()):
            with netns.entered(st.ns) as ok:
                self._release_ns(st, inside=ok)

    def _note(self, msg: str) -> None:
        if msg not in self.errors:
            self.errors.append(msg)
