"""DDS settings for large messages on one machine (camera images, 64-beam clouds).

With Fast DDS' default shared-memory segment (0.5 MB) a 1.8 MB PointCloud2 goes over UDP
fragments, and best-effort subscribers (our sensor QoS) lose most of them when images and
clouds arrive together. A 32 MB shared-memory segment delivers them intact; UDP stays on for
other hosts (see docs/foundation.md, multi-machine).
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


def large_data_profile_path() -> Path:
    """Write the profile once (content-addressed) and return its path."""
    digest = hashlib.sha1(FASTDDS_LARGE_DATA_XML.encode()).hexdigest()[:10]
    path = Path(tempfile.gettempdir()) / f"squeeze_perception_fastdds_{digest}.xml"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(FASTDDS_LARGE_DATA_XML)
        tmp.replace(path)
    return path


def apply_dds_defaults(env: dict[str, str]) -> dict[str, str]:
    """Loopback discovery and, for Fast DDS, the large-data profile unless the user set their own."""
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps"):
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(large_data_profile_path()))
    return env
