//! Integration tests: cli. Each test runs the built `df2redis-sync` binary and checks its exit
//! code, stdout and stderr.

use std::path::Path;
use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_df2redis-sync"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write_config(dir: &Path, yaml: &str) -> String {
    let p = dir.join("replicate.yaml");
    std::fs::write(&p, yaml).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn help_lists_commands_examples_and_exit_codes() {
    let r = run(&["--help"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for needle in [
        "replicate",
        "check",
        "status",
        "version",
        "--verbose",
        "--quiet",
        "--log-file",
        "Examples:",
        "Exit codes:",
        "130  interrupted",
        "2    usage or configuration error",
        "RUST_LOG",
    ] {
        assert!(
            r.stdout.contains(needle),
            "--help lacks {needle}:\n{}",
            r.stdout
        );
    }
    let r = run(&["replicate", "--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("--dry-run"), "{}", r.stdout);
    assert!(r.stdout.contains("-c, --config <CONFIG>"), "{}", r.stdout);
    assert!(r.stdout.contains("REPLCONF"), "{}", r.stdout);
}

#[test]
fn version_flag_and_subcommand() {
    let want = format!("df2redis-sync {}", env!("CARGO_PKG_VERSION"));
    for args in [&["--version"][..], &["version"][..], &["-V"][..]] {
        let r = run(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout.trim(), want, "{args:?}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let r = run(&["bogus"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("unrecognized subcommand 'bogus'"),
        "{}",
        r.stderr
    );

    let r = run(&[]);
    assert_eq!(r.code, 2, "no subcommand prints help and exits 2");
    assert!(r.stderr.contains("Usage:"), "{}", r.stderr);

    let r = run(&["replicate"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("required"), "{}", r.stderr);

    let r = run(&["replicate", "a.yaml", "--config", "b.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);

    let r = run(&["-v", "--quiet", "version"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn bad_config_exits_2_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "source:\n  addr: 127.0.0.1:6380\n  passwrd: hunter2\ntarget:\n  addr: 127.0.0.1:99999\n",
    );
    let r = run(&["replicate", "--dry-run", &path]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("config {path} has 2 problems:")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("source.passwrd: unknown key; did you mean `password`?"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("target.addr = `127.0.0.1:99999`: port must be a number between 1 and 65535"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "nothing on stdout: {}", r.stdout);

    let r = run(&["replicate", "-c", "/definitely/not/here.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("cannot read config file /definitely/not/here.yaml"),
        "{}",
        r.stderr
    );
}

#[test]
fn unimplemented_subcommands_say_so_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: 127.0.0.1:2\n",
    );
    for cmd in ["check", "status"] {
        let r = run(&[cmd, &path]);
        assert_eq!(r.code, 2, "{cmd}: {}", r.stderr);
        assert!(
            r.stderr
                .contains(&format!("`{cmd}` is not implemented yet; nothing was done")),
            "{cmd}: {}",
            r.stderr
        );
        assert!(
            r.stdout.is_empty(),
            "{cmd} must not print fake output: {}",
            r.stdout
        );
    }
}

/// `replicate` against an unreachable master fails at once with exit 1 (no retry loop before
/// a first session was established).
#[test]
fn replicate_unreachable_master_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: 127.0.0.1:2\n",
    );
    let r = run(&["replicate", &path]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("127.0.0.1:1"), "{}", r.stderr);
}

#[test]
fn config_warnings_are_logged_and_log_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    // `migrate` (a Go df2redis key) loads with a warning; port 1 refuses connections quickly.
    let path = write_config(
        dir.path(),
        "source:\n  addr: 127.0.0.1:1\ntarget:\n  addr: 127.0.0.1:1\nmigrate:\n  snapshotPath: x\n",
    );
    let r = run(&["replicate", &path, "--log-file", log.to_str().unwrap()]);
    assert!(
        r.stderr
            .contains("`migrate` belongs to the Go df2redis and is ignored"),
        "{}",
        r.stderr
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("`migrate` belongs to the Go df2redis"),
        "{logged}"
    );

    let r = run(&["--quiet", "replicate", &path]);
    assert!(
        r.stderr.contains("WARN"),
        "--quiet keeps warnings: {}",
        r.stderr
    );
}
