"""Evaluation of the pipeline on bags: the replay runners (offline and through ROS), metrics against the
ground truth of synthetic bags, plots and the report of ``vggt4d-replay``.

- :mod:`.metrics`: ATE/RPE (evo), depth AbsRel/delta1, mask IoU, track EPE, runtime figures (no ROS);
- :mod:`.gt`: ground truth and published outputs read back from bags;
- :mod:`.config`: node parameters from a params YAML, cameras matched to a bag;
- :mod:`.offline` / :mod:`.through_ros`: the two runners; :mod:`.node_messages`: the node's messages;
- :mod:`.evaluate`: every metric from outputs.mcap + the input bag; :mod:`.report`: plots, report.md.
"""
