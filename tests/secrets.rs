//! Private names (`token`, `stored_tokens`): each member sees, writes, renames onto and
//! deletes only their own copy, kept owner-only in the store's private area, which no
//! member reaches through the mount; the kernel's shared name cache never hands one
//! member's copy to another.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn write_as(user: &User, umask: u32, path: &Path, text: &str) {
    let script = format!("printf %s '{text}' > '{}'", path.display());
    sh_as_ok(user, umask, &script);
}

fn read_as(user: &User, path: &Path) -> std::process::Output {
    sh_as(user, 0o022, &format!("cat '{}'", path.display()))
}

/// The store path of `user`'s private copy of `name`.
fn private_copy(m: &Mount, user: &User, name: &str) -> PathBuf {
    m.store
        .join(".hfcachefs-private")
        .join(user.uid.to_string())
        .join(name)
}

#[test]
fn each_member_has_their_own_token_owner_only_on_disk() {
    let m = Mount::new();
    let u = m.users;
    for name in ["token", "stored_tokens"] {
        let p = m.mnt.join(name);
        write_as(&u.a, 0o002, &p, &format!("alice-{name}"));
        write_as(&u.b, 0o022, &p, &format!("bob-{name}"));
        // Each reads their own, whoever wrote last.
        assert_eq!(
            sh_as_ok(&u.a, 0o022, &format!("cat {}", p.display())),
            format!("alice-{name}")
        );
        assert_eq!(
            sh_as_ok(&u.b, 0o022, &format!("cat {}", p.display())),
            format!("bob-{name}")
        );
        for user in [&u.a, &u.b] {
            let meta = fs::symlink_metadata(private_copy(&m, user, name)).unwrap();
            assert_eq!(
                (meta.uid(), meta.mode() & 0o7777),
                (user.uid, 0o600),
                "{name} of {}",
                user.name
            );
            // As the mount shows it to its owner: theirs, owner-only.
            let shown = sh_as_ok(user, 0o022, &format!("stat -c '%u %a' {}", p.display()));
            assert_eq!(shown.trim(), format!("{} 600", user.uid));
        }
    }
    // Nothing shared was left in the store root.
    assert!(!m.store.join("token").exists() && !m.store.join("stored_tokens").exists());
    // The outsider has no way in at all; a member without a token has none.
    assert!(!read_as(&u.c, &m.mnt.join("token")).status.success());
    // Deleting is per member too.
    sh_as_ok(
        &u.a,
        0o022,
        &format!("rm {}", m.mnt.join("token").display()),
    );
    assert!(!read_as(&u.a, &m.mnt.join("token")).status.success());
    assert_eq!(
        sh_as_ok(
            &u.b,
            0o022,
            &format!("cat {}", m.mnt.join("token").display())
        ),
        "bob-token"
    );
}

#[test]
fn the_private_area_cannot_be_reached_or_listed() {
    let m = Mount::new();
    let u = m.users;
    write_as(&u.a, 0o022, &m.mnt.join("token"), "alice");
    let area = m.mnt.join(".hfcachefs-private");
    let listing = sh_as_ok(&u.b, 0o022, &format!("ls -a {}", m.mnt.display()));
    assert!(
        !listing.contains(".hfcachefs-private") && !listing.contains("token"),
        "{listing}"
    );
    assert_errno(
        fs::symlink_metadata(&area),
        &[libc::ENOENT],
        "lookup of the private area",
    );
    assert_errno(
        fs::metadata(area.join(u.a.uid.to_string()).join("token")),
        &[libc::ENOENT],
        "path into the private area",
    );
    let mkdir = sh_as(&u.b, 0o022, &format!("mkdir {}", area.display()));
    assert!(!mkdir.status.success(), "mkdir of the private area's name");
    // A hard link to someone's token cannot be made, nor one onto a private name.
    let shared = m.mnt.join("shared-file");
    write_as(&u.b, 0o022, &shared, "x");
    let ln = sh_as(
        &u.b,
        0o022,
        &format!("ln {} {}", shared.display(), m.mnt.join("token").display()),
    );
    assert!(!ln.status.success(), "link onto a private name");
    write_as(&u.b, 0o022, &m.mnt.join("token"), "bob");
    let ln = sh_as(
        &u.b,
        0o022,
        &format!(
            "ln {} {}",
            m.mnt.join("token").display(),
            m.mnt.join("copy").display()
        ),
    );
    assert!(!ln.status.success(), "link of a private copy");
    // A private copy does not leave for a shared name.
    let mv = sh_as(
        &u.b,
        0o022,
        &format!(
            "mv -T {} {}",
            m.mnt.join("token").display(),
            m.mnt.join("exposed").display()
        ),
    );
    assert!(
        !mv.status.success(),
        "rename of a private copy to a shared name"
    );
    assert!(!m.mnt.join("exposed").exists());
}

#[test]
fn a_token_written_through_a_temporary_name_ends_up_private() {
    let m = Mount::new();
    let u = m.users;
    let tmp = m.mnt.join("token.tmp");
    let token = m.mnt.join("token");
    // bob reads "token" in a loop meanwhile, filling the kernel's caches for his copy.
    write_as(&u.b, 0o022, &token, "bob");
    for round in 0..20 {
        write_as(&u.a, 0o002, &tmp, &format!("alice-{round}"));
        sh_as_ok(
            &u.a,
            0o002,
            &format!("mv -f {} {}", tmp.display(), token.display()),
        );
        assert_eq!(
            sh_as_ok(&u.b, 0o022, &format!("cat {}", token.display())),
            "bob"
        );
        assert_eq!(
            sh_as_ok(&u.a, 0o022, &format!("cat {}", token.display())),
            format!("alice-{round}")
        );
    }
    let meta = fs::symlink_metadata(private_copy(&m, &u.a, "token")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (u.a.uid, 0o600));
    // bob never saw it under the temporary name either once it was moved.
    assert!(!read_as(&u.b, &tmp).status.success());
}

#[test]
fn chmod_of_the_mount_root_locks_nobody_out() {
    let m = Mount::new();
    let u = m.users;
    let before = m.mst("");
    // What huggingface_hub 2.x does to HF_HOME when it saves a token.
    sh_as_ok(
        &u.a,
        0o022,
        &format!(
            "chmod 0700 {} || true; echo x > {}/a-file",
            m.mnt.display(),
            m.mnt.display()
        ),
    );
    assert_eq!(
        m.mst("").perm(),
        before.perm(),
        "the mount root keeps its mode"
    );
    sh_as_ok(
        &u.b,
        0o077,
        &format!("cat {}/a-file && ls {}", m.mnt.display(), m.mnt.display()),
    );
    let store = fs::metadata(&m.store).unwrap();
    assert_eq!(
        (store.uid(), store.mode() & 0o7777),
        (0, 0o700),
        "the store root stays root-only"
    );
}

/// Two members reading their own token in a tight loop: the kernel's one dentry for
/// `token` must never give one the other's copy, nor a spurious error.
#[test]
fn contention_no_wrong_answers_for_thirty_seconds() {
    let m = Mount::new();
    let u = m.users;
    let token = m.mnt.join("token");
    write_as(&u.a, 0o022, &token, "ALICE");
    write_as(&u.b, 0o022, &token, "BOB");
    let secs = std::env::var("HFCACHEFS_CONTENTION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30u64);
    // A shell loop per user, counting right answers, wrong answers and errors.
    let script = |want: &str| {
        format!(
            "end=$(( $(date +%s) + {secs} )); ok=0; wrong=0; err=0; \
             while [ $(date +%s) -lt $end ]; do for i in 1 2 3 4 5 6 7 8 9 10; do \
             if v=$(cat {t} 2>/dev/null); then \
               if [ \"$v\" = {want} ]; then ok=$((ok+1)); else wrong=$((wrong+1)); fi; \
             else err=$((err+1)); fi; done; done; echo $ok $wrong $err",
            t = token.display()
        )
    };
    let start = Instant::now();
    let run = |user: &User, want: &str| {
        let mut c = sh_as_cmd(user, 0o022, &script(want));
        c.stdout(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (run(&u.a, "ALICE"), run(&u.b, "BOB"));
    let out = |c: std::process::Child| {
        let o = c.wait_with_output().unwrap();
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        let v: Vec<u64> = s.split_whitespace().map(|n| n.parse().unwrap()).collect();
        assert_eq!(v.len(), 3, "{s}");
        (v[0], v[1], v[2])
    };
    let (ra, rb) = (out(a), out(b));
    // `date +%s` counts whole seconds: the loops end within the last one.
    assert!(start.elapsed() >= Duration::from_secs(secs - 1));
    println!("contention {secs} s: alice {ra:?}, bob {rb:?} (right, wrong, errors)");
    assert_eq!(
        (ra.1, ra.2, rb.1, rb.2),
        (0, 0, 0, 0),
        "wrong answers or errors"
    );
    assert!(ra.0 > 100 && rb.0 > 100, "the loops ran: {ra:?} {rb:?}");
}

#[test]
fn private_option_names_the_private_files() {
    let m = Mount::with_opts("private=secret.json");
    let u = m.users;
    write_as(&u.a, 0o022, &m.mnt.join("secret.json"), "a");
    assert!(!read_as(&u.b, &m.mnt.join("secret.json")).status.success());
    assert!(private_copy(&m, &u.a, "secret.json").exists());
    // `token` is shared under this mount's options.
    write_as(&u.a, 0o022, &m.mnt.join("token"), "shared");
    assert_eq!(
        sh_as_ok(
            &u.b,
            0o022,
            &format!("cat {}", m.mnt.join("token").display())
        ),
        "shared"
    );
}

/// A store from before private names (or written by another tool) holds a shared token:
/// doctor names it as an exposed secret, fix-store moves it into its owner's private
/// place, and from then on the owner reads it through the mount and nobody else does.
#[test]
fn an_old_shared_token_is_reported_and_moved_by_fix_store() {
    let m = Mount::new();
    let u = m.users;
    let old = m.store.join("token");
    fs::write(&old, "alice-old").unwrap();
    std::os::unix::fs::chown(&old, Some(u.a.uid), Some(u.gid)).unwrap();
    fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o660)).unwrap();
    // Not shown to anyone through the mount meanwhile.
    assert!(!read_as(&u.b, &m.mnt.join("token")).status.success());
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(BIN);
        c.args(args).env("HF_HOME", &m.mnt);
        run_timeout(c, Duration::from_secs(90))
    };
    let (mnt, store) = (m.mnt.display().to_string(), m.store.display().to_string());
    let doctor = run(&["doctor", &mnt]);
    let text = out_str(&doctor);
    assert_eq!(doctor.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FAIL] secrets: exposed secret")
            && text.contains(&format!("fix-store {store}")),
        "{text}"
    );
    let dry = run(&["fix-store", &store, "--dry-run"]);
    assert!(
        out_str(&dry).contains("would move token"),
        "{}",
        out_str(&dry)
    );
    assert!(old.exists(), "a dry run moves nothing");
    let fixed = run(&["fix-store", &store]);
    assert!(fixed.status.success(), "{}", out_str(&fixed));
    assert!(!old.exists());
    let meta = fs::symlink_metadata(private_copy(&m, &u.a, "token")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (u.a.uid, 0o600));
    assert_eq!(
        sh_as_ok(&u.a, 0o022, &format!("cat {}/token", mnt)),
        "alice-old"
    );
    assert!(!read_as(&u.b, &m.mnt.join("token")).status.success());
    let doctor = run(&["doctor", &mnt]);
    assert!(
        out_str(&doctor).contains("[ OK ] secrets:"),
        "{}",
        out_str(&doctor)
    );
    // A member's own doctor run checks their token is theirs alone.
    let mine = sh_as(&u.a, 0o022, &format!("HF_HOME={mnt} {BIN} doctor {mnt}"));
    assert!(
        out_str(&mine).contains("secrets: token yours alone"),
        "{}",
        out_str(&mine)
    );
    // stats counts private files without naming anyone.
    let stats = run(&["stats", &store]);
    assert!(
        out_str(&stats).contains("private files (members' tokens): 1"),
        "{}",
        out_str(&stats)
    );
}
