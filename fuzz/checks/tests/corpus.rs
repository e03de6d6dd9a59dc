//! Every committed seed and regression of `fuzz/` through its target's checks, and a fixed
//! set of mutations of each: a few seconds of the fuzzers' work on every test run, so
//! that a change which breaks what a target checks fails here first. The mutations are
//! drawn from a fixed seed, so a failure repeats; it names the input and writes its bytes
//! to a file that `cargo fuzz run <target> FILE` replays.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use ringkv_core::rng::DetRng;

/// Mutations of each input, besides the input itself.
const MUTATIONS_PER_INPUT: u64 = 1_000;

/// The committed inputs of these directories under `fuzz/`, sorted by path.
fn inputs(dirs: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    for dir in dirs {
        let dir = fuzz.join(dir);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            // Hex-named files are a local fuzzing run's own finds, not committed.
            let committed = !name.chars().all(|c| c.is_ascii_hexdigit());
            if path.is_file() && committed {
                let bytes = std::fs::read(&path).expect("a corpus file");
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    found
}

/// The seeded stream the mutations are drawn from (the core's own, so a failure repeats).
struct Rng(DetRng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..bound` (0 if `bound` is 0).
    fn below(&mut self, bound: usize) -> usize {
        self.0.between(0, bound.saturating_sub(1) as u64) as usize
    }
}

/// One mutation of `input`, of the kinds libFuzzer's own mutators make: bytes flipped or
/// set to edge values, a cut, a stretch repeated, bytes inserted, a splice of another input.
fn mutate(input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = [0x00, 0xFF, 0x7F, 0x80, b'\n', b'"', b'\\', b'\r'][rng.below(8)];
            }
            2 => out.truncate(at),
            3 => {
                // Repeated up to 64 times: inputs past the targets' frame limits.
                let end = (at + 1 + rng.below(16)).min(out.len());
                let stretch = out[at.min(end)..end].repeat(1 + rng.below(64));
                out.splice(at..at, stretch);
            }
            4 => {
                let fresh: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                out.splice(at..at, fresh);
            }
            _ => {
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
        }
    }
    out
}

/// Runs `check` on every input and its mutations; panics naming the first that fails.
fn replay(target: &str, dirs: &[&str], check: fn(&[u8])) {
    let inputs = inputs(dirs);
    assert!(
        !inputs.is_empty(),
        "no committed inputs for {target} in {dirs:?}"
    );
    let mut rng = Rng(DetRng::new(0x00C0_FFEE ^ target.len() as u64));
    let mut runs = 0u64;
    for (index, (path, bytes)) in inputs.iter().enumerate() {
        let other = &inputs[(index + 1) % inputs.len()].1;
        for mutation in 0..=MUTATIONS_PER_INPUT {
            let input = if mutation == 0 {
                bytes.clone()
            } else {
                mutate(bytes, other, &mut rng)
            };
            if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
                let saved = std::env::temp_dir().join(format!("ringkv-fuzz-{target}-failure"));
                std::fs::write(&saved, &input).expect("saving the failing input");
                panic!(
                    "{target}: {} (mutation {mutation}) failed its checks; the input is in {}: \
                     cd fuzz && cargo fuzz run {target} {}",
                    path.display(),
                    saved.display(),
                    saved.display()
                );
            }
            runs += 1;
        }
    }
    assert_eq!(runs, inputs.len() as u64 * (MUTATIONS_PER_INPUT + 1));
}

#[test]
fn proto_seeds_and_their_mutations_pass() {
    replay("proto", &["corpus/proto"], ringkv_fuzz_checks::proto::check);
}

#[test]
fn log_seeds_regressions_and_their_mutations_pass() {
    replay(
        "log",
        &["corpus/log", "regressions/log"],
        ringkv_fuzz_checks::log::check,
    );
}

#[test]
fn resp_seeds_and_their_mutations_pass() {
    replay("resp", &["corpus/resp"], ringkv_fuzz_checks::resp::check);
}

#[test]
fn roles_seeds_regressions_log_seeds_and_their_mutations_pass() {
    replay(
        "roles",
        &["corpus/roles", "regressions/roles", "corpus/log"],
        ringkv_fuzz_checks::roles::check,
    );
}

#[test]
fn a_broken_check_is_caught_and_its_input_named() {
    let caught =
        catch_unwind(|| replay("resp", &["corpus/resp"], |input| assert!(input.len() < 40)));
    let message = caught.expect_err("a check that fails must fail the replay");
    let text = message
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        text.contains("resp: ") && text.contains("failed its checks"),
        "{text}"
    );
}
