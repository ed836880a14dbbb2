//! The exports and renderers, checked against what other tools expect: speedscope's own JSON schema,
//! pprof's protobuf decoded back, inferno's SVG with its search and zoom script, the HTML's
//! self-containment and determinism.

mod common;

use std::collections::HashMap;
use std::io::Read;

use ffiprof_flamegraph::pprof::{self, proto};
use ffiprof_flamegraph::stacks::{attribute, Costs};
use ffiprof_flamegraph::{diff, folded, html, speedscope, svg, Weight};
use prost::Message;

fn function_totals(p: &ffiprof_profile::Profile) -> Costs {
    let mut t = Costs::default();
    for f in &p.functions {
        t.add(&Costs::of_function(f));
    }
    t
}

#[test]
fn attribution_keeps_every_total_exact() {
    for p in [common::demo_profile(), common::large_profile(2_000)] {
        let mut per_function: HashMap<usize, Costs> = HashMap::new();
        for sc in attribute(&p) {
            per_function.entry(sc.function).or_default().add(&sc.costs);
        }
        for (i, f) in p.functions.iter().enumerate() {
            assert_eq!(
                per_function.get(&i).copied().unwrap_or_default(),
                Costs::of_function(f),
                "{}",
                f.function
            );
        }
    }
}

#[test]
fn sampled_stacks_are_scaled_to_the_site_totals() {
    let mut p = common::demo_profile();
    // One call in 10 recorded its stack: the stacks saw 75 + 25 of the site's 1000 calls.
    p.meta.stack_sample_every = 10;
    for s in &mut p.functions[0].sites[0].stacks {
        s.calls /= 10;
        s.time.native /= 10;
        s.time.marshal_in /= 10;
        s.time.marshal_out /= 10;
        s.time.gil_wait /= 10;
    }
    let calls = folded::fold(
        &p,
        &folded::FoldOptions {
            weight: Weight::Calls,
        },
    );
    let cos: Vec<(Vec<&str>, u64)> = calls
        .iter()
        .filter(|(s, _)| s.last() == Some(&"libm.so.6!cos"))
        .collect();
    assert_eq!(cos.iter().map(|c| c.1).collect::<Vec<_>>(), vec![750, 250]);
}

#[test]
fn functions_without_python_callers_sit_under_a_root_frame() {
    let p = common::demo_profile();
    let f = folded::fold(&p, &folded::FoldOptions::default());
    assert!(f
        .to_text()
        .contains("[C callers];libfixture.so!fx_init;native 1200000\n"));
    assert_eq!(f.total(), function_totals(&p).total_ns());
}

#[test]
fn speedscope_matches_its_schema_and_the_totals() {
    let p = common::demo_profile();
    let doc = speedscope::export(&p, &Default::default());

    let schema_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/speedscope-file-format-schema.json"
    );
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.add_resource("speedscope.json", schema).unwrap();
    let id = compiler.compile("speedscope.json", &mut schemas).unwrap();
    if let Err(e) = schemas.validate(&doc, id) {
        panic!("speedscope output violates the schema: {e:#}");
    }
    // And the schema really rejects a broken file, so the check above means something.
    let mut broken = doc.clone();
    broken["profiles"][0]["type"] = "sampled-ish".into();
    assert!(schemas.validate(&broken, id).is_err());

    let t = function_totals(&p);
    let sum = |i: usize| {
        doc["profiles"][i]["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum(0), t.total_ns());
    assert_eq!(doc["profiles"][0]["endValue"].as_u64(), Some(t.total_ns()));
    assert_eq!(sum(1), t.calls);
    assert_eq!(sum(2), t.arg_bytes + t.buffer_bytes);
    let frames = doc["shared"]["frames"].as_array().unwrap();
    assert!(frames
        .iter()
        .any(|f| f["name"] == "step" && f["file"] == "app.py" && f["line"] == 12));
    assert!(frames.iter().any(
        |f| f["name"] == "libm.so.6!cos" && f["file"] == "/usr/lib/x86_64-linux-gnu/libm.so.6"
    ));
    assert!(frames.iter().any(|f| f["name"] == "marshal-in"));
}

fn decode_pprof(bytes: &[u8]) -> proto::Profile {
    assert_eq!(
        &bytes[..2],
        &[0x1f, 0x8b],
        "pprof files are gzip-compressed"
    );
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .unwrap();
    proto::Profile::decode(raw.as_slice()).expect("valid profile.proto")
}

#[test]
fn pprof_decodes_with_samples_and_locations() {
    let p = common::demo_profile();
    let bytes = pprof::export(&p).unwrap();
    assert_eq!(
        bytes,
        pprof::export(&p).unwrap(),
        "pprof output must be deterministic"
    );
    let prof = decode_pprof(&bytes);
    let s = |i: i64| prof.string_table[i as usize].as_str();
    assert_eq!(prof.string_table[0], "");
    let types: Vec<(&str, &str)> = prof
        .sample_type
        .iter()
        .map(|t| (s(t.r#type), s(t.unit)))
        .collect();
    assert_eq!(types[0], ("calls", "count"));
    assert_eq!(types[1], ("time", "nanoseconds"));
    assert_eq!(s(prof.default_sample_type), "time");
    assert_eq!(prof.duration_nanos, 2_500_000_000);

    // Column sums equal the profile's totals.
    let t = function_totals(&p);
    let col = |name: &str| {
        let i = types.iter().position(|t| t.0 == name).unwrap();
        prof.sample.iter().map(|x| x.value[i]).sum::<i64>() as u64
    };
    assert_eq!(col("calls"), t.calls);
    assert_eq!(col("time"), t.total_ns());
    assert_eq!(col("native"), t.time.native);
    assert_eq!(col("marshal_in"), t.time.marshal_in);
    assert_eq!(col("construction"), t.time.construction);
    assert_eq!(col("buffer_bytes"), t.buffer_bytes);

    // Every location id resolves, and stacks are leaf first: C function, then the call site.
    let locs: HashMap<u64, &proto::Location> = prof.location.iter().map(|l| (l.id, l)).collect();
    let funcs: HashMap<u64, &proto::Function> = prof.function.iter().map(|f| (f.id, f)).collect();
    let name_of = |loc_id: &u64| {
        let l = locs[loc_id];
        let f = funcs[&l.line[0].function_id];
        (
            s(f.name).to_string(),
            s(f.filename).to_string(),
            l.line[0].line,
        )
    };
    let stacks: Vec<Vec<(String, String, i64)>> = prof
        .sample
        .iter()
        .map(|x| x.location_id.iter().map(name_of).collect())
        .collect();
    let cos_main = stacks
        .iter()
        .find(|st| st[0].0 == "libm.so.6!cos" && st.iter().any(|f| f.0 == "main"))
        .expect("a cos sample through main");
    assert_eq!(cos_main[1], ("step".to_string(), "app.py".to_string(), 12));
    assert_eq!(cos_main.last().unwrap().0, "<module>");
    assert!(stacks
        .iter()
        .any(|st| st.len() == 2 && st[0].0 == "libfixture.so!fx_init" && st[1].0 == "[C callers]"));

    // C functions sit in a mapping named after their library.
    let cos_loc = prof
        .location
        .iter()
        .find(|l| s(funcs[&l.line[0].function_id].name) == "libm.so.6!cos")
        .unwrap();
    let mapping = prof
        .mapping
        .iter()
        .find(|m| m.id == cos_loc.mapping_id)
        .unwrap();
    assert_eq!(s(mapping.filename), "/usr/lib/x86_64-linux-gnu/libm.so.6");
    assert_eq!(cos_loc.address, 0x1f2a0);
}

#[test]
fn svg_has_inferno_search_and_zoom_and_is_deterministic() {
    let p = common::demo_profile();
    let opts = svg::SvgOptions::default();
    let a = svg::render(&p, Weight::Time, &opts).unwrap();
    assert_eq!(a, svg::render(&p, Weight::Time, &opts).unwrap());
    for needle in [
        "function search(",
        "function zoom(",
        "id=\"frames\"",
        "onload=\"init(evt)\"",
        "libm.so.6!cos",
        "marshal-in",
    ] {
        assert!(a.contains(needle), "SVG lacks {needle}");
    }
    // Parts have the legend's colours.
    assert!(a.contains("fill=\"rgb(78,121,167)\""), "native is #4e79a7");
    let calls = svg::render(&p, Weight::Calls, &opts).unwrap();
    assert!(
        calls.contains("1,203 calls") || calls.contains("1203 calls"),
        "the root counts calls"
    );
    assert!(matches!(
        svg::render(&ffiprof_profile::Profile::new(), Weight::Time, &opts),
        Err(ffiprof_flamegraph::Error::Empty)
    ));
}

#[test]
fn html_is_self_contained_and_deterministic() {
    let p = common::demo_profile();
    let report = ffiprof_analyzer::summarize(&p, &Default::default());
    let opts = html::HtmlOptions::default();
    let page = html::render(&p, &report, &opts);
    assert_eq!(page, html::render(&p, &report, &opts));
    for banned in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "<link",
        "@import",
        "<iframe",
    ] {
        assert!(
            !page.contains(banned),
            "report must not load remote resources: found {banned}"
        );
    }
    assert!(page.contains("Content-Security-Policy"));
    // The flamegraph is the first <svg>: inferno's script finds it by position.
    let first_svg = page.find("<svg").unwrap();
    assert!(
        page[first_svg..].starts_with("<svg version=\"1.1\""),
        "{}",
        &page[first_svg..first_svg + 80]
    );
    assert!(
        !page.contains("<?xml"),
        "the XML prolog must be stripped from the inline SVG"
    );
    for needle in [
        "id=\"functions-table\"",
        "id=\"sites-table\"",
        "id=\"lat-0\"",
        "fx_sum_doubles",
        "3.11.2",
        "14ns per timed interval",
    ] {
        assert!(page.contains(needle), "report lacks {needle}");
    }
    // Recommendations link to the site table.
    if !report.recommendations.is_empty() {
        assert!(
            page.contains("<p>At <a class=\"mono\" href=\"#site-"),
            "a recommendation links its site"
        );
    }
    // Markup from profile data is escaped.
    assert!(page.contains("&lt;module&gt;"));
    assert!(!page.contains("<module>"));
}

#[test]
fn html_shows_recommendations_given_as_json() {
    let p = common::demo_profile();
    let mut report = ffiprof_analyzer::summarize(&p, &Default::default());
    report.recommendations.clear();
    let page = html::render(&p, &report, &html::HtmlOptions::default());
    assert!(page.contains("No recommendation"));
}

#[test]
fn diff_reports_deltas_and_renders() {
    let before = common::demo_profile();
    let mut after = before.clone();
    after.functions[0].calls = 10;
    after.functions[0].time.marshal_in = 2_000;
    after.functions.remove(2);
    let d = diff::compare(&before, &after);
    let cos = d.functions.iter().find(|f| f.function == "cos").unwrap();
    assert_eq!(cos.before.unwrap().calls, 1000);
    assert_eq!(cos.after.unwrap().calls, 10);
    let init = d
        .functions
        .iter()
        .find(|f| f.function == "fx_init")
        .unwrap();
    assert!(init.after.is_none());
    let page = diff::render_html(
        &before,
        &after,
        &diff::DiffHtmlOptions {
            before_name: "a.json".into(),
            after_name: "b.json".into(),
            ..Default::default()
        },
    );
    assert!(
        page.contains("Differential flamegraph")
            && page.contains("id=\"diff-table\"")
            && page.contains("<svg")
    );
    let text = diff::differential_folded(&before, &after, Weight::Time).unwrap();
    assert!(
        text.contains("[C callers];libfixture.so!fx_init;native 1200000 0\n"),
        "{text}"
    );
}

#[test]
fn large_profiles_are_pruned_not_truncated() {
    let p = common::large_profile(5_000);
    let f = folded::fold(&p, &folded::FoldOptions::default());
    assert!(f.len() > 5_000);
    let lines = f.pruned_lines(0.0001, usize::MAX).lines;
    assert!(lines.len() < f.len(), "thin stacks are folded away");
    let total: u64 = lines
        .iter()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, f.total(), "pruning keeps the total");
    let capped = f.pruned_lines(0.0, 1_000);
    assert!(
        capped.frames <= 1_100,
        "the frame budget holds: {}",
        capped.frames
    );
    let total: u64 = capped
        .lines
        .iter()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, f.total(), "the budget keeps the total too");
}
