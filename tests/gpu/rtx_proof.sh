#!/bin/sh
# Proof of the engine path with TensorRT-RTX on a GPU box (run from the repository root):
#   1. `edgeinfer build` of the demo ONNX with the RTX builder, manifest beside the engine;
#   2. `edgeinfer inspect` on it: on a GPU RTX does not target (the H200, compute capability 9.0) the
#      pre-flight names the compute capability before TensorRT is asked;
#   3. the daemon with that engine first and ONNX Runtime next in the chain, on the demo video to the end,
#      printing the log and heartbeat lines that say which link serves.
# Needs: python3 with PYTHONPATH=daemon, TensorRT-RTX importable (tensorrt_rtx or tensorrt_rtx_bindings, e.g.
# pip install --target DIR tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings and DIR on PYTHONPATH),
# cuda-python, onnxruntime, opencv, pydantic, pyyaml; the demo files in models/.
# Writes into $OUT (default: a new temporary folder). Exit code 0 when all three steps did what they should.
set -u
OUT=${OUT:-$(mktemp -d)}
ROOT=$(pwd)
ONNX=$ROOT/models/yolov3-tiny/yolov3-tiny.onnx
VIDEO=$ROOT/models/media/bikes.mp4
ENGINE=$OUT/yolov3-tiny.rtx.engine
PY=${PYTHON:-python3}
status=0

echo "== 0. this host"
$PY -m edgeinfer doctor || true

echo "== 1. edgeinfer build (TensorRT-RTX)"
$PY -m edgeinfer build "$ONNX" -o "$ENGINE" --runtime tensorrt_rtx || { echo "BUILD FAILED"; exit 1; }
ls -l "$ENGINE" "$ENGINE.manifest.json"
$PY - "$ENGINE" <<'PYEOF'
import sys
head = open(sys.argv[1], "rb").read(64)
print("plan header (64 bytes):", head.hex(" ", 4))
PYEOF

echo "== 2. edgeinfer inspect"
$PY -m edgeinfer inspect "$ENGINE" > "$OUT/inspect.txt" 2>&1
echo "inspect exit code: $? (1 = cannot run here)"
cat "$OUT/inspect.txt"
if grep -q "cannot run here: compute capability" "$OUT/inspect.txt"; then
  echo "PRE-FLIGHT REFUSED THE ENGINE BY COMPUTE CAPABILITY (expected on a GPU RTX does not target)"
elif grep -q "^can run here" "$OUT/inspect.txt"; then
  echo "the engine can run on this GPU (an RTX-targeted GPU): the chain will serve link 0"
else
  echo "UNEXPECTED inspect verdict"; status=1
fi

echo "== 3. daemon: RTX engine first, ONNX Runtime next, demo video to the end"
cat > "$OUT/rtx-chain.yaml" <<YAML
sources:
  - id: bikes
    type: video
    path: $VIDEO
    realtime: false
models:
  - id: yolov3-tiny
    path: $ENGINE
    backend: tensorrt
    backend_options: {runtime: tensorrt_rtx}
    device: gpu
    labels: $ROOT/models/yolov3-tiny/coco.names
    sources: [bikes]
    preprocess: {resize: stretch, color: rgb, scale: 0.00392156862745098}
    decoder: {type: yolo, layout: v5, conf_threshold: 0.25, iou_threshold: 0.45}
    fallback:
      - {path: $ONNX, backend: onnxruntime, device: cpu}
outputs:
  - {type: jsonl, path: $OUT/out.jsonl}
YAML
$PY -m edgeinfer check "$OUT/rtx-chain.yaml"
echo "check exit code: $?"
$PY -m edgeinfer run "$OUT/rtx-chain.yaml" 2> "$OUT/daemon.log"
code=$?
echo "daemon exit code: $code"; [ $code -eq 0 ] || status=1
echo "-- log lines about the chain:"
grep -E "cannot load|serving on|cannot run here|stopped" "$OUT/daemon.log"
$PY - "$OUT/out.jsonl" <<'PYEOF' || status=1
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
beats = [r for r in rows if r.get("type") == "heartbeat"]
records = [r for r in rows if r.get("type") != "heartbeat"]
print(f"-- {len(records)} records, {len(beats)} heartbeats")
if beats:
    print("first heartbeat serving:", json.dumps(beats[0]["serving"]))
    print("last heartbeat serving: ", json.dumps(beats[-1]["serving"]))
frames = [r["frame"] for r in records]
print("frames", frames[:3], "...", frames[-3:], "detections in total:", sum(len(r["detections"]) for r in records))
ok = len(records) == 250 and beats and all(b["serving"]["yolov3-tiny"]["link"] is not None for b in beats)
print("DAEMON RAN THE VIDEO TO THE END ON THE CHAIN" if ok else "DAEMON RUN INCOMPLETE")
sys.exit(0 if ok else 1)
PYEOF
echo "outputs in $OUT"
exit $status
