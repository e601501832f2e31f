"""Synthetic dynamic multi-camera data with exact ground truth (no ROS import).

- :mod:`.synth`: :class:`SynthConfig`, :class:`SynthSequence` (frames rendered on demand);
- :mod:`.bagwriter`: :func:`write_synth_bag` (rosbag2, MCAP or sqlite3, ground truth on ``/gt/...``);
- :mod:`.scene`, :mod:`.render`, :mod:`.textures`: analytic scene, numpy ray caster, procedural textures.

See ``docs/synthetic-data.md``.
"""
from .synth import CameraFrame, SynthConfig, SynthFrame, SynthSequence, Tracks

__all__ = ["CameraFrame", "SynthConfig", "SynthFrame", "SynthSequence", "Tracks"]
