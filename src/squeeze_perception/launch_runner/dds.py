"""DDS settings for large messages on one machine (camera images, 64-beam clouds).

With Fast DDS' default shared-memory segment (0.5 MB) a 1.8 MB PointCloud2 goes over UDP
fragments, and best-effort subscribers (our sensor QoS) lose most of them when images and
clouds arrive together. A 32 MB shared-memory segment delivers them intact.

Two profiles (docs/reliability.md):
* loopback (`ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`, the default of the launch runner, the
  Makefile and the tests): UDP only on 127.0.0.1, so no DDS socket binds 0.0.0.0 and nothing
  leaves the machine even if discovery were misconfigured;
* multi-machine (any other range, e.g. SUBNET): UDP on every interface, for other hosts
  (docs/foundation.md, multi-machine).
A FASTDDS_DEFAULT_PROFILES_FILE the user set is always kept.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

FASTDDS_LARGE_DATA_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>shm_large_segment</transport_id>
        <type>SHM</type>
        <segment_size>33554432</segment_size>
        <port_queue_capacity>512</port_queue_capacity>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>udp_v4</transport_id>
        <type>UDPv4</type>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="squeeze_perception_large_data" is_default_profile="true">
      <rtps>
        <userTransports>
          <transport_id>shm_large_segment</transport_id>
          <transport_id>udp_v4</transport_id>
        </userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


# Same, with UDP restricted to the loopback interface (Fast DDS 3 allowlist): for
# ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST. Open it for other hosts with the profile above
# (unset the range or set SUBNET) or by adding interfaces to the allowlist.
FASTDDS_LOOPBACK_XML = FASTDDS_LARGE_DATA_XML.replace(
    "<type>UDPv4</type>\n",
    "<type>UDPv4</type>\n"
    "        <interfaces>\n"
    "          <allowlist>\n"
    "            <interface name=\"127.0.0.1\"/>\n"
    "          </allowlist>\n"
    "        </interfaces>\n").replace("squeeze_perception_large_data", "squeeze_perception_loopback")


def _profile_path(xml: str) -> Path:
    """Write a profile once (content-addressed) and return its path."""
    digest = hashlib.sha1(xml.encode()).hexdigest()[:10]
    path = Path(tempfile.gettempdir()) / f"squeeze_perception_fastdds_{digest}.xml"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(xml)
        tmp.replace(path)
    return path


def large_data_profile_path() -> Path:
    """The multi-machine profile: shared memory locally, UDP on every interface."""
    return _profile_path(FASTDDS_LARGE_DATA_XML)


def loopback_profile_path() -> Path:
    """The local profile: shared memory, UDP on 127.0.0.1 only."""
    return _profile_path(FASTDDS_LOOPBACK_XML)


def profile_path_for(env: dict[str, str] | None = None) -> Path:
    """Loopback profile when discovery is local (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), else
    the multi-machine one (unset means SUBNET to ROS)."""
    env = os.environ if env is None else env
    local = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper() == "LOCALHOST"
    return loopback_profile_path() if local else large_data_profile_path()


def apply_dds_defaults(env: dict[str, str]) -> dict[str, str]:
    """Loopback discovery and, for Fast DDS, the matching profile unless the user set their own."""
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps"):
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile_path_for(env)))
    return env
