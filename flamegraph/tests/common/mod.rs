//! Synthetic profiles shared by the tests, the browser test and `scripts/bench-html`.
#![allow(dead_code)]

use std::path::PathBuf;

use ffiprof_profile::{Frame, FunctionRecord, HookStatus, Profile, SiteRecord, Split, StackSample};

/// A small profile with every feature a report shows: two Python stacks reaching one site, a site
/// with construction and buffers, GIL wait, a C-only function, a skipped hook, sampled timing.
pub fn demo_profile() -> Profile {
    let mut p = Profile::new();
    p.meta.pid = 4242;
    p.meta.command = vec![
        "python3".into(),
        "app.py".into(),
        "--n".into(),
        "1000".into(),
    ];
    p.meta.python = Some("3.11.2 (main, Mar 13 2023, 12:18:29) [GCC 12.2.0]".into());
    p.meta.executable = "/usr/bin/python3.11".into();
    p.meta.start_unix_ns = 1_700_000_000_000_000_000;
    p.meta.duration_ns = 2_500_000_000;
    p.meta.probe_overhead_ns = 14;
    p.meta.clock = "tsc".into();
    p.meta.mode = "run".into();
    p.meta.write_reason = "exit".into();
    p.meta.complete = true;
    p.meta.timing_sample_every = 1;
    p.meta.stack_sample_every = 1;
    p.meta.threads = 2;
    p.meta.agent_version = "0.1.0".into();
    p.hooks.push(HookStatus {
        hook: "tp_call".into(),
        module: "_cffi_backend".into(),
        installed: false,
        error: Some("module not loaded".into()),
    });
    p.frames = vec![
        Frame {
            file: "app.py".into(),
            function: "<module>".into(),
            line: 40,
        },
        Frame {
            file: "app.py".into(),
            function: "main".into(),
            line: 30,
        },
        Frame {
            file: "app.py".into(),
            function: "step".into(),
            line: 12,
        },
        Frame {
            file: "app.py".into(),
            function: "warmup".into(),
            line: 22,
        },
        Frame {
            file: "app.py".into(),
            function: "fill".into(),
            line: 18,
        },
    ];
    p.stacks = vec![vec![0, 1, 2], vec![0, 3, 2], vec![0, 1, 4]];

    let mut cos = FunctionRecord::new("/usr/lib/x86_64-linux-gnu/libm.so.6", "cos");
    cos.offset = 0x1f2a0;
    cos.calls = 1000;
    cos.timed_calls = 1000;
    cos.python_calls = 1000;
    cos.arg_count = 1;
    cos.arg_bytes = 8000;
    cos.ret_bytes = 8000;
    cos.time.native = 30_000;
    cos.time.marshal_in = 215_000;
    cos.time.marshal_out = 75_000;
    cos.time.gil_wait = 5_000;
    cos.native_hist.record_n(28, 900);
    cos.native_hist.record_n(60, 90);
    cos.native_hist.record_n(900, 10);
    cos.sites.push(SiteRecord {
        file: "app.py".into(),
        line: 12,
        function: "step".into(),
        calls: 1000,
        timed_calls: 1000,
        time: Split {
            native: 30_000,
            marshal_in: 215_000,
            marshal_out: 75_000,
            gil_wait: 5_000,
            ..Split::default()
        },
        arg_bytes: 8000,
        stacks: vec![
            StackSample {
                stack: 0,
                calls: 750,
                time: Split {
                    native: 22_500,
                    marshal_in: 160_000,
                    marshal_out: 56_000,
                    gil_wait: 5_000,
                    construction: 0,
                },
            },
            StackSample {
                stack: 1,
                calls: 250,
                time: Split {
                    native: 7_500,
                    marshal_in: 55_000,
                    marshal_out: 19_000,
                    gil_wait: 0,
                    construction: 0,
                },
            },
        ],
        ..Default::default()
    });

    let mut fill = FunctionRecord::new("/opt/vendor/libfixture.so", "fx_sum_doubles");
    fill.offset = 0x1130;
    fill.calls = 200;
    fill.timed_calls = 200;
    fill.python_calls = 200;
    fill.arg_count = 2;
    fill.arg_bytes = 3200;
    fill.buffer_bytes = 1_600_000;
    fill.time.native = 400_000;
    fill.time.marshal_in = 60_000;
    fill.time.marshal_out = 16_000;
    fill.time.construction = 40_000_000;
    fill.construction_bytes = 1_600_000;
    fill.fresh_buffer_calls = 200;
    fill.native_hist.record_n(1_900, 150);
    fill.native_hist.record_n(2_400, 45);
    fill.native_hist.record_n(9_000, 5);
    fill.sites.push(SiteRecord {
        file: "app.py".into(),
        line: 18,
        function: "fill".into(),
        calls: 200,
        timed_calls: 200,
        time: Split {
            native: 400_000,
            marshal_in: 60_000,
            marshal_out: 16_000,
            construction: 40_000_000,
            ..Split::default()
        },
        construction_bytes: 1_600_000,
        buffer_bytes: 1_600_000,
        arg_bytes: 3200,
        fresh_buffer_calls: 200,
        stacks: vec![StackSample {
            stack: 2,
            calls: 200,
            time: Split {
                native: 400_000,
                marshal_in: 60_000,
                marshal_out: 16_000,
                gil_wait: 0,
                construction: 40_000_000,
            },
        }],
        ..Default::default()
    });

    let mut init = FunctionRecord::new("/opt/vendor/libfixture.so", "fx_init");
    init.calls = 3;
    init.timed_calls = 3;
    init.time.native = 1_200_000;
    init.native_hist.record_n(400_000, 3);

    p.functions = vec![cos, fill, init];
    p
}

/// A profile with `n` distinct Python stacks spread over 40 functions and 400 sites, for the
/// benchmark: stacks are 6–13 frames deep over a pool of 3 000 frames.
pub fn large_profile(n: usize) -> Profile {
    let mut p = Profile::new();
    p.meta.command = vec!["python3".into(), "big.py".into()];
    p.meta.python = Some("3.11.2".into());
    p.meta.duration_ns = 60_000_000_000;
    p.meta.complete = true;
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..3000u32 {
        p.frames.push(Frame {
            file: format!("/srv/app/pkg{}/module_{}.py", i % 37, i % 211),
            function: format!("handler_{i}"),
            line: 10 + i % 400,
        });
    }
    let n_functions = 40;
    let sites_per_function = 10;
    for fi in 0..n_functions {
        let mut f = FunctionRecord::new(
            format!("/opt/lib/libengine{}.so", fi % 5),
            format!("engine_op_{fi}"),
        );
        for si in 0..sites_per_function {
            let site_frame = (fi * sites_per_function + si) as u32;
            let fr = p.frames[site_frame as usize].clone();
            f.sites.push(SiteRecord {
                file: fr.file,
                line: fr.line,
                function: fr.function,
                ..Default::default()
            });
        }
        p.functions.push(f);
    }
    for s in 0..n {
        let depth = 5 + (next() % 8) as usize;
        let fi = s % n_functions;
        let si = (next() % sites_per_function as u64) as usize;
        let mut stack: Vec<u32> = (0..depth).map(|_| 400 + (next() % 2600) as u32).collect();
        stack.push((fi * sites_per_function + si) as u32);
        p.stacks.push(stack);
        let calls = 1 + next() % 50;
        let sample = StackSample {
            stack: s as u32,
            calls,
            time: Split {
                native: calls * (20 + next() % 5000),
                marshal_in: calls * (150 + next() % 400),
                marshal_out: calls * (60 + next() % 100),
                gil_wait: if next() % 4 == 0 {
                    calls * (next() % 20_000)
                } else {
                    0
                },
                construction: if next() % 3 == 0 {
                    calls * (next() % 50_000)
                } else {
                    0
                },
            },
        };
        let f = &mut p.functions[fi];
        let site = &mut f.sites[si];
        site.calls += sample.calls;
        site.timed_calls += sample.calls;
        site.time += sample.time;
        site.arg_bytes += sample.calls * 16;
        site.buffer_bytes += sample.calls * 4096;
        f.calls += sample.calls;
        f.timed_calls += sample.calls;
        f.python_calls += sample.calls;
        f.time += sample.time;
        f.arg_bytes += sample.calls * 16;
        f.buffer_bytes += sample.calls * 4096;
        f.native_hist
            .record_n(sample.time.native / sample.calls, sample.calls);
        site.stacks.push(sample);
    }
    p
}

/// Where tests write artifacts people may want to look at: `<workspace>/target/ffiprof-flamegraph`.
pub fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    let dir = target.join("ffiprof-flamegraph");
    std::fs::create_dir_all(&dir).expect("create the artifact directory");
    dir
}
