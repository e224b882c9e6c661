"""Which addresses do a ROS 2 talker and listener bind their UDP sockets to? (docs/reliability.md)

    ROS_DOMAIN_ID=47 .venv/bin/python scripts/dds_socket_check.py            # the profile the runner picks
    ROS_DOMAIN_ID=47 .venv/bin/python scripts/dds_socket_check.py ""         # no profile (Fast DDS defaults)
    ROS_DOMAIN_ID=47 .venv/bin/python scripts/dds_socket_check.py PROFILE.xml

Starts the two as separate processes with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and the given
FASTDDS_DEFAULT_PROFILES_FILE, waits until they exchange messages, then maps their socket inodes
to /proc/net/udp{,6} and prints one line per bound address and port, plus messages received.
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

from squeeze_perception.offline.graphbench.packets import socket_inodes

TALK = """
import rclpy, time
from std_msgs.msg import String
rclpy.init(); n = rclpy.create_node('dds_check_talker'); p = n.create_publisher(String, 'dds_check', 10)
print('up', flush=True)
t0 = time.time()
while time.time() - t0 < 30:
    p.publish(String(data='x')); rclpy.spin_once(n, timeout_sec=0.1)
"""
LISTEN = """
import rclpy, time
from std_msgs.msg import String
rclpy.init(); n = rclpy.create_node('dds_check_listener'); got = []
n.create_subscription(String, 'dds_check', got.append, 10)
print('up', flush=True)
t0 = time.time()
while time.time() - t0 < 30 and len(got) < 20: rclpy.spin_once(n, timeout_sec=0.1)
time.sleep(2)
print('received', len(got), flush=True)
"""


def bound_udp(inodes: set[int]) -> list[tuple[str, int]]:
    found = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if int(f[9]) in inodes:
                addr, port = f[1].split(":")
                ip = socket.inet_ntoa(struct.pack("<I", int(addr, 16))) if len(addr) == 8 else f"[{addr}]"
                found.append((ip, int(port, 16)))
    return sorted(found)


def main() -> int:
    if len(sys.argv) > 1:
        profile = sys.argv[1]
    else:
        from squeeze_perception.launch_runner.dds import loopback_profile_path

        profile = str(loopback_profile_path())
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", FASTDDS_DEFAULT_PROFILES_FILE=profile)
    if not profile:
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE")
    print(f"profile: {profile or '(none)'}")
    talker = subprocess.Popen([sys.executable, "-c", TALK], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    listener = subprocess.Popen([sys.executable, "-c", LISTEN], env=env, stdout=subprocess.PIPE, text=True)
    try:
        for proc in (talker, listener):
            proc.stdout.readline()  # 'up': rclpy initialised (can take seconds on a loaded machine)
        time.sleep(3)
        for name, proc in (("talker", talker), ("listener", listener)):
            for ip, port in bound_udp(socket_inodes(proc.pid)):
                print(f"{name:8s} bound {ip}:{port}")
        print(listener.communicate(timeout=60)[0].strip())
    finally:
        for proc in (talker, listener):
            if proc.poll() is None:
                proc.kill()  # the talker loops on; its exit text is noise
                proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
