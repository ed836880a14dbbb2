//! Flamegraph SVGs drawn by inferno, with inferno's own JavaScript for search and zoom.
//!
//! Colours carry meaning: Python frames are sand, C functions teal, and the parts of the split have
//! fixed colours that the HTML report's legend and stacked bars share ([`PART_COLORS`]). Output is
//! deterministic (inferno's FNV-based colouring, never its random one).

use inferno::flamegraph::color::{BasicPalette, Color, Palette, PaletteMap};
use inferno::flamegraph::{self, Options};

use crate::folded::{Folded, Weight};
use crate::{Error, Result};

/// Fixed colours of the parts of the split and of the byte kinds, as `#rrggbb`.
pub const PART_COLORS: [(&str, &str); 7] = [
    ("marshal-in", "#f28e2b"),
    ("native", "#4e79a7"),
    ("marshal-out", "#59a14f"),
    ("gil-wait", "#e15759"),
    ("construction", "#b07aa1"),
    ("arg-bytes", "#edc948"),
    ("buffer-bytes", "#76b7b2"),
];

/// Options for drawing a flamegraph.
#[derive(Debug, Clone)]
pub struct SvgOptions {
    pub title: String,
    pub subtitle: Option<String>,
    /// Fixed width in pixels; `None` makes the SVG fill its container (and re-fit on resize).
    pub image_width: Option<usize>,
    /// Frames narrower than this percentage of the whole graph are not drawn (inferno's
    /// `--minwidth`, whose default of 0.01 % is about a tenth of a pixel on a 1200 px graph).
    pub min_width: f64,
    /// At most this many frames are drawn (the narrowest are folded into their parents): about
    /// 250 bytes of SVG each, so the default keeps a graph near 6 MB.
    pub max_frames: usize,
}

impl Default for SvgOptions {
    fn default() -> Self {
        SvgOptions {
            title: "ffiprof boundary flamegraph".into(),
            subtitle: None,
            image_width: None,
            min_width: 0.01,
            max_frames: 25_000,
        }
    }
}

fn hex(c: &str) -> Color {
    let n = u32::from_str_radix(c.trim_start_matches('#'), 16).unwrap_or(0);
    Color {
        r: (n >> 16) as u8,
        g: (n >> 8) as u8,
        b: n as u8,
    }
}

/// FNV-1a, so a C function keeps its colour from one report to the next.
fn fnv(name: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn palette_for(folded: &Folded) -> PaletteMap {
    let mut map = PaletteMap::default();
    for (name, c) in PART_COLORS {
        map.insert(name, hex(c));
    }
    for name in folded.names() {
        if name.contains('!') && !name.contains(" (") {
            let h = fnv(name);
            let v = |shift: u32| ((h >> shift) & 0xff) as f32 / 255.0;
            let color = Color {
                r: (70.0 + 40.0 * v(0)) as u8,
                g: (160.0 + 40.0 * v(8)) as u8,
                b: (170.0 + 50.0 * v(16)) as u8,
            };
            map.insert(name, color);
        }
    }
    map
}

fn inferno_options<'a>(
    opts: &SvgOptions,
    weight: Weight,
    palette: Option<&'a mut PaletteMap>,
) -> Options<'a> {
    let mut o = Options::default();
    o.title = opts.title.clone();
    o.subtitle = opts.subtitle.clone();
    o.image_width = opts.image_width;
    o.min_width = opts.min_width;
    o.count_name = weight.unit().to_string();
    o.name_type = "Frame:".to_string();
    o.colors = Palette::Basic(BasicPalette::Yellow);
    o.deterministic = true;
    o.palette_map = palette;
    o
}

fn min_fraction(opts: &SvgOptions) -> f64 {
    opts.min_width / 100.0
}

/// Draws folded stacks as a standalone SVG document.
pub fn render_folded(folded: &Folded, opts: &SvgOptions) -> Result<String> {
    render_folded_counted(folded, opts).map(|(svg, _)| svg)
}

/// [`render_folded`], also saying how many frames were too thin to draw (folded into their parents).
pub fn render_folded_counted(folded: &Folded, opts: &SvgOptions) -> Result<(String, usize)> {
    if folded.is_empty() {
        return Err(Error::Empty);
    }
    let pruned = folded.pruned_lines(min_fraction(opts), opts.max_frames);
    let lines = pruned.lines;
    let mut palette = palette_for(folded);
    let mut o = inferno_options(opts, folded.weight, Some(&mut palette));
    // pruned_lines come out in trie order: every subtree contiguous, as inferno needs when not sorting.
    o.no_sort = true;
    let mut out = Vec::new();
    flamegraph::from_lines(&mut o, lines.iter().map(|s| s.as_str()), &mut out)
        .map_err(Error::Flamegraph)?;
    Ok((
        clamp_fluid_width(String::from_utf8(out).expect("inferno writes UTF-8")),
        pruned.dropped,
    ))
}

/// inferno's script sizes the frames to the SVG's laid-out width less its padding; while the SVG
/// has no width yet (laid out later, a zero-width container, mid-resize) that is -20, which
/// browsers reject with an error on the console. Zero would not do either: the labels' x is then
/// placed at `100 * 3 / width` = "Infinity%", another console error. Clamp it at one pixel; the
/// next resize or layout sets the real width.
fn clamp_fluid_width(svg: String) -> String {
    const INFERNO: &str = "frames.attributes.width.value = svg.width.baseVal.value - xpad * 2;";
    const CLAMPED: &str =
        "frames.attributes.width.value = Math.max(1, svg.width.baseVal.value - xpad * 2);";
    svg.replacen(INFERNO, CLAMPED, 1)
}

/// Draws a profile's flamegraph with the given weight.
pub fn render(
    profile: &ffiprof_profile::Profile,
    weight: Weight,
    opts: &SvgOptions,
) -> Result<String> {
    let folded = crate::folded::fold(profile, &crate::folded::FoldOptions { weight });
    render_folded(&folded, opts)
}

/// inferno's differential flamegraph: widths from `after`, red where a frame grew, blue where it shrank.
pub fn render_differential(before: &Folded, after: &Folded, opts: &SvgOptions) -> Result<String> {
    let lines = differential_lines(before, after)?;
    if lines.is_empty() {
        return Err(Error::Empty);
    }
    let mut o = inferno_options(opts, after.weight, None);
    let mut out = Vec::new();
    flamegraph::from_lines(&mut o, lines.iter().map(|s| s.as_str()), &mut out)
        .map_err(Error::Flamegraph)?;
    Ok(clamp_fluid_width(
        String::from_utf8(out).expect("inferno writes UTF-8"),
    ))
}

/// The differential folded text (`stack before after` per line), as inferno's `diff-folded` writes it.
pub fn differential_text(before: &Folded, after: &Folded) -> Result<String> {
    let mut lines = differential_lines(before, after)?;
    lines.sort();
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok(out)
}

fn differential_lines(before: &Folded, after: &Folded) -> Result<Vec<String>> {
    let b = before.to_text();
    let a = after.to_text();
    let mut out = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        b.as_bytes(),
        a.as_bytes(),
        &mut out,
    )
    .map_err(Error::Differential)?;
    let text = String::from_utf8(out).expect("inferno writes UTF-8");
    Ok(text.lines().map(str::to_string).collect())
}

/// Removes the XML declaration and DOCTYPE so the SVG can sit inside an HTML document.
pub fn strip_prolog(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folded::{Folded, Weight};

    #[test]
    fn fluid_width_is_never_negative() {
        let folded = Folded::parse(Weight::Calls, "main;f 3\nmain;g 1\n");
        let svg = render_folded(&folded, &SvgOptions::default()).unwrap();
        assert!(
            svg.contains("Math.max(1, svg.width.baseVal.value - xpad * 2)"),
            "inferno's width line changed: update clamp_fluid_width"
        );
        assert!(!svg.contains("= svg.width.baseVal.value - xpad * 2;"));
    }
}
