//! TensorBoard event files (`events.out.tfevents.*`): TFRecord framing (length,
//! masked CRC-32C, Event protobuf, masked CRC-32C) of scalar and histogram summaries.

use crate::proto::tensorboard::{event, summary, Event, HistogramProto, Summary};
use anyhow::{bail, Context, Result};
use protobuf::Message;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

pub struct EventWriter {
    out: BufWriter<File>,
    pub path: PathBuf,
}

impl EventWriter {
    /// `dir/events.out.tfevents.<seconds>.<host>.<pid>`, opened with the version event.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let name = format!(
            "events.out.tfevents.{}.{}.{}",
            now() as u64,
            if host.is_empty() { "fkpnet" } else { &host },
            std::process::id()
        );
        let path = dir.join(name);
        let f = File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        let mut w = EventWriter { out: BufWriter::new(f), path };
        let mut e = Event::new();
        e.wall_time = now();
        e.what = Some(event::What::FileVersion("brain.Event:2".into()));
        w.write(&e)?;
        w.out.flush()?;
        Ok(w)
    }

    fn write(&mut self, e: &Event) -> Result<()> {
        let data = e.write_to_bytes()?;
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc(&len).to_le_bytes())?;
        self.out.write_all(&data)?;
        self.out.write_all(&masked_crc(&data).to_le_bytes())?;
        Ok(())
    }

    fn summary(&mut self, step: i64, values: Vec<summary::Value>) -> Result<()> {
        let mut s = Summary::new();
        s.value = values;
        let mut e = Event::new();
        e.wall_time = now();
        e.step = step;
        e.what = Some(event::What::Summary(s));
        self.write(&e)
    }

    /// Scalars at one step, e.g. `[("val/rmse_px", 2.1)]`.
    pub fn scalars(&mut self, step: i64, values: &[(&str, f64)]) -> Result<()> {
        let vals = values
            .iter()
            .map(|(tag, v)| {
                let mut sv = summary::Value::new();
                sv.tag = tag.to_string();
                sv.value = Some(summary::value::Value::SimpleValue(*v as f32));
                sv
            })
            .collect();
        self.summary(step, vals)?;
        self.out.flush()?;
        Ok(())
    }

    /// Histograms of tensors at one step (30 equal-width buckets over [min, max]).
    pub fn histograms(&mut self, step: i64, tensors: &[(String, Tensor)]) -> Result<()> {
        let vals = tensors
            .iter()
            .map(|(tag, t)| {
                let mut sv = summary::Value::new();
                sv.tag = tag.clone();
                sv.value = Some(summary::value::Value::Histo(histogram(t)));
                sv
            })
            .collect();
        self.summary(step, vals)?;
        self.out.flush()?;
        Ok(())
    }
}

pub fn histogram(t: &Tensor) -> HistogramProto {
    let t = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double).flatten(0, -1);
    let mut h = HistogramProto::new();
    h.num = t.size()[0] as f64;
    if h.num == 0.0 {
        return h;
    }
    h.min = t.min().double_value(&[]);
    h.max = t.max().double_value(&[]);
    h.sum = t.sum(Kind::Double).double_value(&[]);
    h.sum_squares = t.square().sum(Kind::Double).double_value(&[]);
    if h.max > h.min {
        let bins = 30;
        // histc with no range bins over [min, max] of the data.
        let counts = t.histc(bins);
        h.bucket = Vec::<f64>::try_from(&counts).unwrap_or_default();
        let w = (h.max - h.min) / bins as f64;
        h.bucket_limit = (1..=bins).map(|i| h.min + w * i as f64).collect();
    } else {
        h.bucket = vec![h.num];
        h.bucket_limit = vec![h.max];
    }
    h
}

/// Read an events file back (checking both CRCs of every record).
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let mut bytes = Vec::new();
    File::open(path).with_context(|| format!("cannot open {}", path.display()))?.read_to_end(&mut bytes)?;
    let mut events = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let bad = || anyhow::anyhow!("{}: corrupt record at byte {i}", path.display());
        let len_bytes = bytes.get(i..i + 8).ok_or_else(bad)?;
        let len = u64::from_le_bytes(len_bytes.try_into()?) as usize;
        let crc = u32::from_le_bytes(bytes.get(i + 8..i + 12).ok_or_else(bad)?.try_into()?);
        if crc != masked_crc(len_bytes) {
            bail!(bad());
        }
        let data = bytes.get(i + 12..i + 12 + len).ok_or_else(bad)?;
        let dcrc = u32::from_le_bytes(bytes.get(i + 12 + len..i + 16 + len).ok_or_else(bad)?.try_into()?);
        if dcrc != masked_crc(data) {
            bail!(bad());
        }
        events.push(Event::parse_from_bytes(data)?);
        i += 16 + len;
    }
    Ok(events)
}
