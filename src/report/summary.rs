//! `fkpnet summary`: a compiled net as a table.

use crate::config::ParamMult;
use crate::graph::{human, Graph};
use crate::layers::shape_str;

/// The `fkpnet summary` table of a compiled net: each layer's output shape, learnable
/// values, forward FLOPs and details (kernel, fillers, bottoms, lr multipliers).
pub fn table(g: &Graph) -> String {
    let mut rows = vec![[
        "layer".to_string(),
        "type".into(),
        "output".into(),
        "params".into(),
        "FLOPs".into(),
        "details".into(),
    ]];
    rows.push(["input".into(), "".into(), shape_str(&g.input), "".into(), "".into(), "".into()]);
    for (i, n) in g.nodes.iter().enumerate() {
        let params: i64 = n.params.iter().filter(|p| p.learn).map(|p| p.shape.iter().product::<i64>()).sum();
        let mut details = n.layer.details();
        if n.bottoms != [i] {
            let from: Vec<String> = n.bottoms.iter().map(|&b| g.blob_name(b)).collect();
            details = format!("<- {} {details}", from.join(" + ")).trim_end().to_string();
        }
        for (d, m) in n.params.iter().zip(&n.mults) {
            if *m != ParamMult::default() {
                details += &format!(" {}:lr*{},decay*{}", d.suffix, m.lr_mult, m.decay_mult);
            }
        }
        rows.push([
            n.name.clone(),
            n.kind.into(),
            shape_str(&n.output),
            thousands(params),
            human(n.flops),
            details,
        ]);
    }
    rows.push([
        "total".into(),
        "".into(),
        "".into(),
        thousands(g.num_params()),
        human(g.flops()),
        format!(
            "forward per image; loss {}{}{}",
            serde_yaml::to_string(&g.loss.kind).unwrap_or_default().trim(),
            if g.loss.loss_weight != 1.0 { format!(" x {}", g.loss.loss_weight) } else { String::new() },
            g.loss
                .js_reg
                .as_ref()
                .map(|r| format!(" + js_reg (sigma {} cells) x {}", r.sigma, r.loss_weight))
                .unwrap_or_default()
        ),
    ]);
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = format!("net {}\n", g.name);
    for (i, r) in rows.iter().enumerate() {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
        out += line.trim_end();
        out.push('\n');
        if i == 0 || i == rows.len() - 2 {
            out += &"-".repeat(widths.iter().sum::<usize>() + 10 + widths[5].min(20));
            out.push('\n');
        }
    }
    out
}

fn thousands(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
