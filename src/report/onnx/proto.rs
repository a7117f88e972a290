//! Writing ONNX's protobuf messages: a graph of nodes and constant tensors, node
//! attributes, and the typed inputs and outputs (a dynamic batch dimension).

use super::super::model::Model;
use crate::proto::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto,
    NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use anyhow::{anyhow, Result};

/// The graph being written: nodes and constant tensors.
pub(super) struct Onnx {
    pub(super) nodes: Vec<NodeProto>,
    pub(super) inits: Vec<TensorProto>,
}

pub(super) fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        type_: Some(AttributeType::INTS.into()),
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub(super) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        type_: Some(AttributeType::INT.into()),
        i: Some(v),
        ..Default::default()
    }
}

pub(super) fn attr_float(name: &str, v: f64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        type_: Some(AttributeType::FLOAT.into()),
        f: Some(v as f32),
        ..Default::default()
    }
}

pub(super) fn attr_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        type_: Some(AttributeType::STRING.into()),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

impl Onnx {
    pub(super) fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: Some(name.into()),
            op_type: Some(op.into()),
            attribute: attrs,
            ..Default::default()
        });
    }

    pub(super) fn floats(&mut self, name: &str, dims: &[i64], values: Vec<f32>) -> String {
        self.inits.push(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(DataType::FLOAT as i32),
            float_data: values,
            name: Some(name.into()),
            ..Default::default()
        });
        name.into()
    }

    pub(super) fn ints(&mut self, name: &str, values: Vec<i64>) -> String {
        self.inits.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: Some(DataType::INT64 as i32),
            int64_data: values,
            name: Some(name.into()),
            ..Default::default()
        });
        name.into()
    }

    pub(super) fn tensor(&mut self, model: &Model, name: &str) -> Result<String> {
        let p = model.params.iter().find(|p| p.name == name).ok_or_else(|| anyhow!("no tensor `{name}`"))?;
        let t = p.tensor.detach().to_kind(tch::Kind::Float).contiguous();
        let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
        Ok(self.floats(name, &t.size(), values))
    }
}

pub(super) fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                None => tensor_shape_proto::dimension::Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type: Some(DataType::FLOAT as i32),
        shape: protobuf::MessageField::some(TensorShapeProto { dim, ..Default::default() }),
        ..Default::default()
    };
    ValueInfoProto {
        name: Some(name.into()),
        type_: protobuf::MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
