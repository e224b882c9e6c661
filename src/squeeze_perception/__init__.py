"""squeeze_perception: SqueezeDet / SqueezeSeg ROS 2 perception with ROS-free cores."""
import os as _os

__version__ = "0.1.0"

# onnxruntime >= 1.29 (Linux wheels) sends telemetry and resolves its collector's host name
# every few seconds; it reads this variable once, when `import onnxruntime` runs, so it is set
# here, before any module of this package can import it (see backends/common.py,
# import_onnxruntime).
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
