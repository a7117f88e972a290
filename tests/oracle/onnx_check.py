"""An exported ONNX model checked by the ONNX project's own tools and run by a real
client, for fkpnet's tests: onnx.checker with full checking (shape inference included),
then onnxruntime on the faces of a Kaggle CSV.

  onnx_check.py MODEL.onnx FACES.csv PRED.csv
      PRED.csv: one row per face, the keypoints in pixels (keypoints * half + half,
      half from the model's metadata).
  onnx_check.py MODEL.onnx - K
      checks, runs a batch of 3 zero images of the model's input size and expects
      2K outputs per face (for models of other faces than Kaggle's).
"""
import csv, re, sys

import numpy as np
import onnx
import onnxruntime as ort

model_path, faces_csv, out = sys.argv[1:4]
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
meta = {p.key: p.value for p in model.metadata_props}
half = float(re.search(r"keypoints \* ([0-9.]+) \+", meta["output"]).group(1))
if faces_csv == "-":
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    y = session.run(["keypoints"], {"data": np.zeros([3, *dims], dtype=np.float32)})[0]
    assert y.shape == (3, 2 * int(out)), y.shape
    assert len(meta["keypoint_names"].split(",")) == int(out)
    print(f"checked, output {y.shape}")
    sys.exit(0)
with open(faces_csv) as f:
    rows = list(csv.DictReader(f))
x = np.array([[float(p) / 255 for p in r["Image"].split()] for r in rows], dtype=np.float32).reshape(-1, 1, 96, 96)
session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
y = session.run(["keypoints"], {"data": x})[0] * half + half
with open(out, "w") as f:
    for row in y.tolist():
        f.write(",".join(f"{v:.6f}" for v in row) + "\n")
print(f"checked, {len(rows)} faces, opset {model.opset_import[0].version}")
