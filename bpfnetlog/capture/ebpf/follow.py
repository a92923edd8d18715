"""The follower thread: keeps programs attached to every wanted UP interface of every namespace.

It rescans namespaces (/run/netns, /proc/*/ns/net) and their links every
`interval_s`: new ones are attached, vanished ones released. Polling instead
of netlink subscriptions, because a subscription socket would pin each
namespace and keep `ip netns del` from freeing it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from bpfnetlog.capture.ebpf import attach, netns
from bpfnetlog.capture.ebpf.attach import Attachment
from bpfnetlog.capture.ebpf.loader import NetlogObject
from bpfnetlog.capture.ebpf.netns import Link, Netns
from bpfnetlog.packets import Nic


@dataclass
class _NsState:
    ns: Netns
    netns_id: int
    obj: NetlogObject
    links: dict[int, tuple[Link, list[Attachment]]] = field(default_factory=dict)


class Follower(threading.Thread):
    """Attach/detach loop; `ready` is set after the first scan (its error, if any, in `error`)."""

    def __init__(self, load: Callable[[int], NetlogObject], on_nic: Callable[[int, Nic], None],
                 ifaces: list[str] | None, namespaces: list[str] | None, mode: str, interval_s: float):
        super().__init__(name="bpfnetlog-follow", daemon=True)
        self._load, self._on_nic = load, on_nic
        self._ifaces, self._namespaces = ifaces, namespaces
        self.mode = mode  # "auto" until the first attach decides "tcx" or "clsact"
        self._interval = interval_s
        self._state: dict[int, _NsState] = {}
        self._next_id = 1
        self._quit = threading.Event()
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.errors: list[str] = []  # per-interface failures, reported once each
        self.stale_removed = 0

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

    def netns_of(self, netns_id: int) -> Netns | None:
        with self._lock:
            return next((s.ns for s in self._state.values() if s.netns_id == netns_id), None)

    def scan(self) -> None:
        found = netns.discover()
        if self._namespaces:
            found = {ino: ns for ino, ns in found.items() if ns.matches(self._namespaces)}
        for ino in [i for i in self._state if i not in found]:
            self._release_ns(self._state[ino], inside=False)
        for ns in found.values():
            with netns.entered(ns) as ok:
                if ok:
                    self._sync(ns, netns.links())

    def _sync(self, ns: Netns, links: list[Link]) -> None:
        wanted = {l.ifindex: l for l in links if l.up and (not self._ifaces or l.name in self._ifaces)}
        st = self._state.get(ns.ino)
        if st is None:
            if not wanted:
                return
            st = _NsState(ns, self._next_id, self._load(self._next_id))
            self._next_id += 1
            with self._lock:
                self._state[ns.ino] = st
        for ifindex, (old, atts) in list(st.links.items()):
            if wanted.get(ifindex, None) is None or wanted[ifindex].name != old.name:
                for a in atts:
                    a.detach()
                with self._lock:
                    del st.links[ifindex]
        for ifindex, link in wanted.items():
            if ifindex not in st.links:
                self._attach(st, link)

    def _attach(self, st: _NsState, link: Link) -> None:
        self.stale_removed += attach.remove_stale(link.ifindex)
        atts: list[Attachment] = []
        try:
            for direction in (1, 2):
                atts.append(self._attach_one(st.obj.prog_fd(direction, link.l3), link.ifindex, direction))
        except OSError as e:
            for a in atts:
                a.detach()
            self._note(f"{st.ns.label}/{link.name}: {e}")
            return
        nic = Nic(name=link.name, mac=link.mac, ifindex=link.ifindex, netns=st.ns.label,
                  virtual=link.virtual, host_network=st.ns.host)
        self._on_nic(st.netns_id, nic)
        with self._lock:
            st.links[link.ifindex] = (link, atts)

    def _attach_one(self, prog_fd: int, ifindex: int, direction: int) -> Attachment:
        if self.mode in ("auto", "tcx"):
            a = attach.attach_tcx(prog_fd, ifindex, direction)
            if a is not None:
                self.mode = "tcx"
                return a
            if self.mode == "tcx":
                raise OSError("this kernel has no tcx links (Linux >= 6.6); use attach mode clsact or auto")
            self.mode = "clsact"
        return attach.attach_clsact(prog_fd, ifindex, direction)

    def _release_ns(self, st: _NsState, inside: bool) -> None:
        """Detach everything of one namespace; clsact filters only from inside it (ifindex is per-ns)."""
        for _, atts in st.links.values():
            for a in atts:
                if a.link_fd >= 0 or inside:
                    a.detach()
        st.obj.close()
        with self._lock:
            self._state.pop(st.ns.ino, None)

    def _release_all(self) -> None:
        for st in list(self._state.values()):
            with netns.entered(st.ns) as ok:
                self._release_ns(st, inside=ok)

    def _note(self, msg: str) -> None:
        if msg not in self.errors:
            self.errors.append(msg)
