"""A second implementation of Caffe's weights file, for fkpnet's tests: Google's Python
protobuf reading proto/caffe.proto (its messages and field numbers are BVLC's, compiled
by grpcio-tools' protoc), and the study's LeNet as PyTorch code
(../shared/bench/nets.py), not fkpnet's.

  caffemodel.py write PROTOTXT OUT.caffemodel FACES.csv PRED.csv
      random PyTorch weights for nets.lenet(), written as Caffe blobs under the
      prototxt's Convolution/InnerProduct names (in order); PRED.csv: its keypoints in
      pixels for the faces of a Kaggle CSV.
  caffemodel.py read DEPLOY.prototxt IN.caffemodel FACES.csv PRED.csv
      the blobs of IN.caffemodel (as named by DEPLOY.prototxt, which must parse as a
      NetParameter) loaded into nets.lenet(); PRED.csv as above.
"""
import csv, os, subprocess, sys, tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def caffe_pb2():
    out = tempfile.mkdtemp()
    from grpc_tools import protoc
    proto = os.path.join(ROOT, "proto")
    if protoc.main(["protoc", f"-I{proto}", f"--python_out={out}", os.path.join(proto, "caffe.proto")]):
        sys.exit("protoc failed on proto/caffe.proto")
    sys.path.insert(0, out)
    import caffe_pb2 as pb
    return pb


def lenet():
    sys.path.insert(0, os.path.join(ROOT, "..", "shared", "bench"))
    from nets import lenet as make
    return make()


def faces(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    x = torch.tensor([[float(p) / 255 for p in r["Image"].split()] for r in rows])
    return x.reshape(-1, 1, 96, 96)


def predict(net, path, out):
    net.eval()
    with torch.no_grad():
        y = net(faces(path)) * 48 + 48
    with open(out, "w") as f:
        for row in y.tolist():
            f.write(",".join(f"{v:.6f}" for v in row) + "\n")


def learned(net):
    return [m for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def names(pb, prototxt):
    from google.protobuf import text_format
    net = pb.NetParameter()
    with open(prototxt) as f:
        text_format.Merge(f.read(), net)
    return [l.name for l in net.layer if l.type in ("Convolution", "InnerProduct")]


def blob(pb, t):
    b = pb.BlobProto()
    b.shape.dim.extend(t.shape)
    b.data.extend(t.detach().flatten().tolist())
    return b


def write(prototxt, model, faces_csv, pred):
    pb = caffe_pb2()
    torch.manual_seed(7)
    net = lenet()
    # He init keeps the signal's scale through the ReLUs, so the keypoints differ from
    # face to face (PyTorch's default init gives nearly the same 30 values for all).
    for m in learned(net):
        torch.nn.init.kaiming_normal_(m.weight)
        torch.nn.init.uniform_(m.bias, -0.1, 0.1)
    out = pb.NetParameter(name="LeNetFKP")
    for name, m in zip(names(pb, prototxt), learned(net), strict=True):
        layer = out.layer.add(name=name, type="Convolution" if isinstance(m, torch.nn.Conv2d) else "InnerProduct")
        layer.blobs.extend([blob(pb, m.weight), blob(pb, m.bias)])
    with open(model, "wb") as f:
        f.write(out.SerializeToString())
    predict(net, faces_csv, pred)


def read(deploy, model, faces_csv, pred):
    pb = caffe_pb2()
    net = lenet()
    weights = pb.NetParameter()
    with open(model, "rb") as f:
        weights.ParseFromString(f.read())
    blobs = {l.name: l.blobs for l in weights.layer}
    for name, m in zip(names(pb, deploy), learned(net), strict=True):
        w, b = blobs[name]
        for t, bp in ((m.weight, w), (m.bias, b)):
            assert list(bp.shape.dim) == list(t.shape), (name, list(bp.shape.dim), list(t.shape))
            t.data = torch.tensor(list(bp.data)).reshape(t.shape)
    predict(net, faces_csv, pred)


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](*sys.argv[2:])
