"""Per-window perception (no ROS): one window of frames -> per-step outputs.

``pipeline`` runs the predictor on a window and turns its outputs into poses, depth, masks, clouds and
keypoints; ``keypoints`` keeps keypoint ids across windows; ``scale`` estimates the metric scale; ``mapping``
fuses the clouds into a voxel map. The node and the replay both run these through the input front end.
"""
