"""An exported ONNX model checked by the ONNX project's own tools and run by a real
client, for fkpnet's tests: onnx.checker with full checking (shape inference included),
then onnxruntime on the faces of a Kaggle CSV.

  onnx_check.py MODEL.onnx FACES.csv PRED.csv
      PRED.csv: one row per face, the keypoints in pixels (keypoints * half + half,
      half from the model's metadata).
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
with open(faces_csv) as f:
    rows = list(csv.DictReader(f))
x = np.array([[float(p) / 255 for p in r["Image"].split()] for r in rows], dtype=np.float32).reshape(-1, 1, 96, 96)
session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
y = session.run(["keypoints"], {"data": x})[0] * half + half
with open(out, "w") as f:
    for row in y.tolist():
        f.write(",".join(f"{v:.6f}" for v in row) + "\n")
print(f"checked, {len(rows)} faces, opset {model.opset_import[0].version}")
