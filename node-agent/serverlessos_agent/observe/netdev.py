"""Network throughput of this network namespace: /proc/net/dev counters and link speeds.

Both are read in the agent's own network namespace: /proc/net/dev is per
namespace, and link speeds come from the SIOCETHTOOL ioctl on a socket, which is
too. /sys/class/net is not used: it shows the namespace of whoever mounted
/sys, so an agent entered into a namespace with nsenter (the local cluster)
would read the host's interfaces there.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import socket
import struct
from pathlib import Path

PROC_NET_DEV = Path("/proc/net/dev")

# Container plumbing carries traffic that also crosses a NIC (a pod's packets
# pass its veth, a bridge and the NIC): counting these would count it twice or
# three times. Loopback never leaves the node.
NOT_COUNTED = (
    "lo",
    "veth",
    "cni",
    "docker",
    "br-",
    "cbr",
    "virbr",
    "flannel",
    "cali",
    "cilium",
    "lxc",
    "vxlan",
    "tunl",
    "kube-",
    "weave",
    "genev",
    "ifb",
)

SIOCETHTOOL = 0x8946
ETHTOOL_GSET = 0x1
SPEED_UNKNOWN = 0xFFFFFFFF


def counted(interface: str) -> bool:
    return not interface.startswith(NOT_COUNTED)


def parse_net_dev(text: str) -> dict[str, int]:
    """Interface -> bytes received plus sent, from /proc/net/dev, counted ones only."""
    out: dict[str, int] = {}
    for line in text.splitlines()[2:]:  # two header lines
        name, sep, rest = line.partition(":")
        fields = rest.split()
        name = name.strip()
        if sep and len(fields) >= 9 and counted(name):
            out[name] = int(fields[0]) + int(fields[8])  # rx bytes, tx bytes
    return out


def read_counters(path: Path = PROC_NET_DEV) -> dict[str, int]:
    try:
        return parse_net_dev(path.read_text())
    except OSError:
        return {}


def rate(before: dict[str, int], after: dict[str, int], seconds: float) -> float:
    """Bytes per second between two readings. Interfaces that came, went or were
    reset in between (counters going backwards) add nothing."""
    if seconds <= 0:
        return 0.0
    moved = sum(max(0, after[i] - before[i]) for i in after.keys() & before.keys())
    return moved / seconds


def link_speed_mbps(interface: str) -> int | None:
    """The negotiated speed (Mbit/s) of an interface, None where unknown (virtual
    devices without a speed, links down, drivers that do not say)."""
    # struct ethtool_cmd: cmd, supported, advertising (u32), speed (u16 at 12), ...,
    # speed_hi (u16 at 28); 44 bytes. ifreq: the name, then a pointer to it.
    cmd = ctypes.create_string_buffer(struct.pack("I", ETHTOOL_GSET).ljust(44, b"\0"))
    ifreq = struct.pack("16sP", interface.encode()[:15], ctypes.addressof(cmd)).ljust(40, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
        except OSError:
            return None
    (low,) = struct.unpack_from("H", cmd.raw, 12)
    (high,) = struct.unpack_from("H", cmd.raw, 28)
    speed = high << 16 | low
    return speed if speed not in (0, SPEED_UNKNOWN, 0xFFFF) else None


def capacity_bytes_per_second(interfaces: list[str]) -> int:
    """Sum of the known link speeds of the counted interfaces, in bytes per second
    (one direction each); 0 = unknown."""
    total = 0
    for interface in interfaces:
        with contextlib.suppress(OSError):
            total += (link_speed_mbps(interface) or 0) * 1_000_000 // 8
    return total
