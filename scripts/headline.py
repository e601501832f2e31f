#!/usr/bin/env python3
"""Print the headline figures of a vggt4d-replay metrics.json (used by scripts/demo.sh)."""
import json
import sys


def _f(x, fmt="{:.3f}"):
    return "n/a" if x is None else fmt.format(x)


def main(path: str) -> int:
    m = json.load(open(path))
    lines = []
    t = m.get("trajectory", {})
    if t.get("available"):
        b = t.get("baseline_constant_pose", {})
        lines.append(f"camera ATE (Sim(3)) {_f(t['sim3']['ate_rmse'])} m   constant-pose baseline "
                     f"{_f(b.get('ate_rmse'))} m   ({t.get('num_poses', '?')} poses)")
    d = m.get("depth", {})
    if d.get("available"):
        b = d.get("baseline_constant_depth", {}).get("per_frame", {})
        lines.append(f"depth AbsRel {_f(d['per_frame']['abs_rel'])}  delta<1.25 {_f(d['per_frame']['delta1'])}   "
                     f"constant-depth baseline AbsRel {_f(b.get('abs_rel'))}")
    k = m.get("dynamic_mask", {})
    if k.get("available"):
        lines.append(f"dynamic-mask IoU {_f(k['iou_dynamic'])}   all-static baseline "
                     f"{_f(k.get('baseline_all_static', {}).get('iou_dynamic'))}")
    r = m.get("runtime", {})
    if r:
        lat = r.get("latency_s", {})
        lines.append(f"steps {r.get('steps_out')}/{r.get('steps_in')}  windows {r.get('windows')}  latency median "
                     f"{_f(lat.get('median'), '{:.2f}')} s  p95 {_f(lat.get('p95'), '{:.2f}')} s  throughput "
                     f"{_f(r.get('throughput_steps_per_s'), '{:.2f}')} steps/s")
    if m.get("incomplete"):
        lines.append(f"INCOMPLETE: {m.get('incomplete_reason')}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
