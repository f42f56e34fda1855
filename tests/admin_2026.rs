//! The administration commands on the 2026 hub cache (huggingface_hub >= 1.33): shared
//! payloads `hub/blobs/<2hex>/<hash>` linked from several repos' `blobs/<etag>`, their
//! `.refs` and `.lock`, beside an old-layout repo, built by a member through a real mount.
//! `stats` counts every inode once and matches `du`; `doctor` finds removed payloads,
//! orphan payloads, `.refs` that disagree with the links, stale downloads in shard
//! directories and an `xet/` members cannot create in; `fix-store` keeps payloads read-only.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// The e2e virtualenv's `hf` (huggingface_hub 2.4.0), when it is installed.
const HF: &str = "/opt/hfcachefs-e2e-xet/venv-new/bin/hf";

fn hf_root(args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("HF_HOME")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE");
    run_timeout(c, Duration::from_secs(120))
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The check line of a doctor report starting with `tag name` and its fix line.
#[track_caller]
fn finding(o: &Output, line: &str) -> String {
    let t = text(o);
    let at = t
        .find(line)
        .unwrap_or_else(|| panic!("no line {line:?}\n{}", out_str(o)));
    let rest = &t[at..];
    let next = rest.find("\n[").unwrap_or(rest.len());
    rest[..next].to_owned()
}

#[track_caller]
fn assert_healthy(o: &Output, what: &str) {
    assert!(
        o.status.code() == Some(0) && text(o).contains("healthy: no problems found"),
        "{what}: expected healthy\n{}",
        out_str(o)
    );
}

fn doctor_as(user: &User, mnt: &str) -> Output {
    sh_as(
        user,
        0o022,
        &format!("HF_HOME='{mnt}' '{BIN}' doctor '{mnt}'"),
    )
}

/// A Xet hash made of one repeated byte (64 hex digits).
fn hash(b: &str) -> String {
    b.repeat(32)
}

/// A JSON number field of a flat `--json` report (the first one of that name).
#[track_caller]
fn field(j: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let at = j.find(&key).unwrap_or_else(|| panic!("no {name} in {j}")) + key.len();
    j[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {j}"))
}

/// The `bytes` of a repo in a `--json` report.
#[track_caller]
fn repo_bytes(j: &str, repo: &str) -> u64 {
    let at = j
        .find(&format!("{{\"name\":\"{repo}\""))
        .unwrap_or_else(|| panic!("no {repo} in {j}"));
    field(&j[at..], "bytes")
}

/// What the fixture holds, to check figures against.
struct Cache {
    /// Payload hashes and sizes.
    big: (String, u64),
    small: (String, u64),
    old_blob: u64,
}

/// Builds, as member A through the mount (umask 022), a hub cache with:
/// - payloads `big` (linked by repos a and b) and `small` (linked by a), each with `.refs`
///   and `.lock`, made 0444 as huggingface_hub does, and the store's marker;
/// - `models--o--a`: two revisions using both payloads (refs/main, refs/pr/1);
/// - `models--o--b`: one revision using `big`;
/// - `models--o--old`: the old layout, one blob file used by two revisions, hard-linked
///   as `datasets--o--copy`'s blob;
/// - trees listings, CACHEDIR.TAG, and `xet/logs`.
fn build(m: &Mount, scale: u64) -> Cache {
    let mnt = m.mnt.display().to_string();
    let big = (hash("0b"), 6 * scale);
    let small = (hash("5a"), 2 * scale);
    let old_blob = 4 * scale;
    let mut script = format!("set -e; cd '{mnt}'; mkdir -p hub/blobs xet/logs; ");
    script += "printf '1\\n' > hub/blobs/.huggingface-shared-blobs; ";
    script += "printf 'Signature: 8a477f597d28d172789f06886806bc55\\n' > hub/CACHEDIR.TAG; ";
    script += "echo log > xet/logs/xet_1.log; ";
    let payload = |(h, size): &(String, u64), links: &[&str]| {
        let dir = format!("hub/blobs/{}", &h[..2]);
        let mut s = format!(
            "mkdir -p {dir}; head -c {size} /dev/urandom > {dir}/{h}; chmod 0444 {dir}/{h}; \
             : > {dir}/{h}.lock; chmod 0666 {dir}/{h}.lock; : > {dir}/{h}.refs; "
        );
        for l in links {
            s += &format!("echo {l} >> {dir}/{h}.refs; ");
        }
        s
    };
    script += &payload(&big, &["models--o--a/blobs/eb", "models--o--b/blobs/eb"]);
    script += &payload(&small, &["models--o--a/blobs/es"]);
    let link_blob = |repo: &str, etag: &str, h: &str| {
        format!(
            "ln -s ../../blobs/{}/{h} hub/{repo}/blobs/{etag}; ",
            &h[..2]
        )
    };
    let snap = |repo: &str, rev: &str, file: &str, etag: &str| {
        let depth = file.matches('/').count();
        format!(
            "mkdir -p hub/{repo}/snapshots/{rev}/$(dirname {file}); \
             ln -s {}../../blobs/{etag} hub/{repo}/snapshots/{rev}/{file}; ",
            "../".repeat(depth)
        )
    };
    for repo in ["models--o--a", "models--o--b", "models--o--old"] {
        script += &format!("mkdir -p hub/{repo}/blobs hub/{repo}/refs/pr hub/{repo}/trees; ");
    }
    script += &link_blob("models--o--a", "eb", &big.0);
    script += &link_blob("models--o--a", "es", &small.0);
    for rev in ["a1", "a2"] {
        script += &snap("models--o--a", rev, "model.safetensors", "eb");
        script += &snap("models--o--a", rev, "sub/extra.bin", "es");
        script += &format!("echo '[]' > hub/models--o--a/trees/{rev}.json; ");
    }
    script += "echo a2 > hub/models--o--a/refs/main; echo a1 > hub/models--o--a/refs/pr/1; ";
    script += &link_blob("models--o--b", "eb", &big.0);
    script += &snap("models--o--b", "b1", "model.safetensors", "eb");
    script += "echo b1 > hub/models--o--b/refs/main; ";
    script += &format!("head -c {old_blob} /dev/urandom > hub/models--o--old/blobs/ox; ");
    for rev in ["o1", "o2"] {
        script += &snap("models--o--old", rev, "pytorch_model.bin", "ox");
    }
    script += "echo o2 > hub/models--o--old/refs/main; echo o1 > hub/models--o--old/refs/pr/1; ";
    script += "mkdir -p hub/datasets--o--copy/blobs; ";
    script += "ln hub/models--o--old/blobs/ox hub/datasets--o--copy/blobs/ox; ";
    sh_as_ok(&m.users.a, 0o022, &script);
    Cache {
        big,
        small,
        old_blob,
    }
}

/// `du` of the store in bytes: `-b` (apparent sizes) or `-B1` (blocks in use); each inode
/// once, one filesystem, as stats walks it.
fn du(store: &Path, how: &str) -> u64 {
    let o = run_timeout(
        cmd("du", &["-sx", how, &store.display().to_string()]),
        OP_TIMEOUT,
    );
    assert!(o.status.success(), "{}", out_str(&o));
    text(&o)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du: {}", out_str(&o)))
}

/// The bytes of the store's regular files, each inode once (`find -type f` by inode).
fn unique_file_bytes(store: &Path) -> u64 {
    let o = run_timeout(
        cmd(
            "find",
            &[
                &store.display().to_string(),
                "-xdev",
                "-type",
                "f",
                "-printf",
                "%i %s\\n",
            ],
        ),
        OP_TIMEOUT,
    );
    assert!(o.status.success(), "{}", out_str(&o));
    let t = text(&o);
    let inodes: std::collections::BTreeMap<&str, u64> = t
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(i, s)| (i, s.parse().unwrap()))
        .collect();
    inodes.values().sum()
}

fn within_1pct(a: u64, b: u64) -> bool {
    a.abs_diff(b) * 100 <= b
}

#[test]
fn stats_totals_match_du_and_follow_shared_payloads() {
    // Without the access record, whose files change on their own between stats and du.
    let m = Mount::with_opts("record=off");
    // 48 MiB in all: a cache of real sizes next to its few dozen directories.
    let c = build(&m, 4 << 20);
    let store = m.store.display().to_string();
    let mnt = m.mnt.display().to_string();

    let o = hf_root(&["stats", &mnt, "--json"]);
    assert!(o.status.success(), "{}", out_str(&o));
    let j = text(&o);
    let total = field(&j, "total_bytes");
    let disk = field(&j, "disk_bytes");
    let (du_apparent, du_blocks) = (du(&m.store, "-b"), du(&m.store, "-B1"));
    let files_once = unique_file_bytes(&m.store);
    let pct = |a: u64, b: u64| (a as f64 - b as f64) * 100.0 / b as f64;
    eprintln!(
        "stats total_bytes {total}: vs du -sxb {du_apparent} {:+.3}%, vs unique regular files {files_once} {:+.3}%; \
         disk_bytes {disk} vs du -sxB1 {du_blocks} {:+.3}%",
        pct(total, du_apparent),
        pct(total, files_once),
        pct(disk, du_blocks)
    );
    // Apparent sizes (what `hf cache ls` and the repos' sizes are in): exactly the unique
    // regular files' bytes; du -b also counts directories' and symlinks' own sizes (4 KiB
    // a directory here), which stats leaves out of total_bytes: within 1% for a cache of
    // real sizes, not for a toy one.
    assert_eq!(total, files_once, "{j}");
    assert!(
        within_1pct(total, du_apparent),
        "{total} vs du {du_apparent}\n{j}"
    );
    // Blocks in use (st_blocks x 512): every inode once, directories and symlinks
    // included, as du counts them: what the store takes on disk.
    assert_eq!(disk, du_blocks, "{j}");

    // Each payload and the hard-linked blob once.
    let files = c.big.1 + c.small.1 + c.old_blob;
    assert!(total >= files && total < files + 4096, "{total}\n{j}");
    assert_eq!(field(&j, "payload_count"), 2);
    assert_eq!(field(&j, "payload_bytes"), c.big.1 + c.small.1);
    // Repos by what their revisions use, following links to the payloads.
    assert_eq!(repo_bytes(&j, "models--o--a"), c.big.1 + c.small.1);
    assert_eq!(repo_bytes(&j, "models--o--b"), c.big.1);
    assert_eq!(repo_bytes(&j, "models--o--old"), c.old_blob);
    // What sharing saves: big linked by two repos; a's payloads and old's blob used by two
    // revisions each; the old blob hard-linked once more.
    assert_eq!(field(&j, "payload_shared_bytes"), c.big.1);
    assert_eq!(
        field(&j, "snapshot_shared_bytes"),
        c.big.1 + c.small.1 + c.old_blob
    );
    assert_eq!(field(&j, "hardlink_shared_bytes"), c.old_blob);
    // Per owner: member A made everything.
    assert!(j.contains(&format!("{{\"uid\":{},", m.users.a.uid)), "{j}");

    // A member through the mount sees the same figures.
    let o = sh_as(&m.users.b, 0o077, &format!("'{BIN}' stats '{mnt}' --json"));
    assert!(o.status.success(), "{}", out_str(&o));
    let jb = text(&o);
    for f in ["payload_shared_bytes", "snapshot_shared_bytes"] {
        assert_eq!(field(&jb, f), field(&j, f), "{f}\n{jb}");
    }
    // Less what members cannot see: private copies and the daemons' records.
    let hidden = field(&j, "private_bytes") + field(&j, "state_bytes");
    assert_eq!(
        field(&jb, "total_bytes"),
        field(&j, "total_bytes") - hidden,
        "{jb}"
    );
    let human = hf_root(&["stats", &store]);
    let t = text(&human);
    assert!(t.contains("shared payloads: 2 (32.0 MiB)"), "{t}");
    assert!(
        t.contains("payloads linked by several repos 24.0 MiB"),
        "{t}"
    );
    assert!(t.contains("models--o--a  (2 revisions"), "{t}");
}

#[test]
fn doctor_finds_removed_and_orphan_payloads_and_refs_that_disagree() {
    let m = Mount::new();
    let u = m.users;
    let c = build(&m, 4096);
    let mnt = m.mnt.display().to_string();
    let store = m.store.display().to_string();
    assert_healthy(&hf_root(&["doctor", &mnt]), "root, fresh 2026 cache");
    assert_healthy(&doctor_as(&u.a, &mnt), "member, fresh 2026 cache");
    // As huggingface_hub makes them, through the mount: payloads read-only, .refs shared.
    let big = format!("hub/blobs/0b/{}", c.big.0);
    assert_store(&m, &big, u.a.uid, u.gid, 0o440);
    assert_store(&m, &format!("{big}.refs"), u.a.uid, u.gid, 0o660);

    // An orphan payload (its repo removed by hand): hf cache prune deletes it.
    let orphan = format!("hub/blobs/0e/{}", hash("0e"));
    sh_as_ok(
        &u.b,
        0o077,
        &format!(
            "cd '{mnt}' && mkdir -p hub/blobs/0e && echo gone > {orphan} && chmod 0444 {orphan} \
             && echo models--o--gone/blobs/x > {orphan}.refs"
        ),
    );
    // A stale download in a shard directory.
    let part = format!("hub/blobs/5a/{}.incomplete", hash("77"));
    sh_as_ok(
        &u.a,
        0o022,
        &format!("cd '{mnt}' && echo part > {part} && touch -d '2 days ago' {part}"),
    );
    let o = hf_root(&["doctor", &mnt]);
    let f = finding(&o, "[WARN] orphan payloads");
    assert!(
        f.contains(&format!("1 shared payload(s) (5 B) no repo links to, e.g. {mnt}/{orphan}"))
            && f.contains(&format!("fix: if no download is running, as a member of the group (not as root): HF_HOME={mnt} hf cache prune")),
        "{}",
        out_str(&o)
    );
    let f = finding(&o, "[WARN] temporary files");
    assert!(f.contains(&part), "{}", out_str(&o));
    let o = doctor_as(&u.a, &mnt);
    assert!(finding(&o, "[WARN] orphan payloads").contains(&orphan));
    if Path::new(HF).exists() {
        // What doctor says prune deletes, prune deletes (and nothing a repo uses).
        sh_as_ok(
            &u.a,
            0o022,
            &format!(
                "HF_HOME='{mnt}' HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 '{HF}' cache prune -y"
            ),
        );
        assert!(
            lst(&m.s(&orphan)).is_err(),
            "hf cache prune left the orphan"
        );
        assert!(lst(&m.s(&big)).is_ok() && lst(&m.s(&part)).is_ok());
    } else {
        eprintln!("{HF} not installed: the orphan is removed by hand");
        fs::remove_file(m.s(&orphan)).unwrap();
        fs::remove_file(m.s(&format!("{orphan}.refs"))).unwrap();
    }
    sh_as_ok(&u.a, 0o022, &format!("rm -f '{mnt}/{part}'"));
    assert_healthy(&hf_root(&["doctor", &mnt]), "root, after prune");

    // `.refs` that lack a link: b's link to big. Prune would still keep big (a's is
    // listed); with no link listed at all it would delete a payload in use.
    let refs = format!("{big}.refs");
    sh_as_ok(
        &u.a,
        0o022,
        &format!("echo models--o--a/blobs/eb > '{mnt}/{refs}'"),
    );
    let o = hf_root(&["doctor", &mnt]);
    let f = finding(&o, "[WARN] payload refs");
    let append = format!("printf '%s\\n' 'models--o--b/blobs/eb' >> '{mnt}/{refs}'");
    assert!(f.contains(&append), "{}", out_str(&o));
    sh_as_ok(
        &u.a,
        0o022,
        &format!("echo models--o--gone/blobs/eb > '{mnt}/{refs}'"),
    );
    let o = hf_root(&["doctor", &mnt]);
    let f = finding(&o, "[FAIL] payload refs");
    assert!(
        f.contains("hf cache prune would delete 1 payload(s) repos still use")
            && f.contains("1 line(s) name links that are gone"),
        "{}",
        out_str(&o)
    );
    // The fix as doctor gives it, run by a member.
    let fix = f
        .lines()
        .find_map(|l| l.trim().strip_prefix("fix: as a member of the group: "))
        .unwrap_or_else(|| panic!("{f}"))
        .to_owned();
    sh_as_ok(&u.b, 0o077, &fix);
    let o = hf_root(&["doctor", &mnt]);
    assert!(
        finding(&o, "[ OK ] payload refs")
            .contains("1 line(s) name links that are gone (harmless)"),
        "{}",
        out_str(&o)
    );

    // A removed payload: repo a's two revisions and repo b's one dangle, found by root
    // and by members, with the download that mends each.
    sh_as_ok(&u.b, 0o077, &format!("rm -f '{mnt}/{big}'"));
    for o in [hf_root(&["doctor", &mnt]), doctor_as(&u.a, &mnt)] {
        let f = finding(&o, "[FAIL] dangling links");
        assert!(
            f.contains("3 link(s) lead nowhere, e.g. ")
                && f.contains("(payload missing)")
                && f.contains(&format!("HF_HOME={mnt} hf download o/a --revision a1"))
                && f.contains(&format!("HF_HOME={mnt} hf download o/a --revision a2"))
                && f.contains(&format!("HF_HOME={mnt} hf download o/b --revision b1")),
            "{}",
            out_str(&o)
        );
    }
    // A removed old-layout blob: the snapshot entry dangles.
    sh_as_ok(
        &u.b,
        0o077,
        &format!(
            "rm -f '{mnt}/hub/datasets--o--copy/blobs/ox' '{mnt}/hub/models--o--old/blobs/ox'"
        ),
    );
    let o = hf_root(&["doctor", &mnt]);
    let f = finding(&o, "[FAIL] dangling links");
    eprintln!("{}", text(&o));
    assert!(
        f.contains("5 link(s)") && f.contains("hf download o/old --revision o1"),
        "{}",
        out_str(&o)
    );
    // Downloaded again (written back as the client would), all is well.
    sh_as_ok(
        &u.a,
        0o022,
        &format!(
            "cd '{mnt}' && head -c 100 /dev/urandom > {big} && chmod 0444 {big} \
             && head -c 100 /dev/urandom > hub/models--o--old/blobs/ox"
        ),
    );
    assert_healthy(&hf_root(&["doctor", &mnt]), "root, after the downloads");
    let _ = store;
}

#[test]
fn doctor_and_fix_store_on_xet_and_payload_modes() {
    let m = Mount::new();
    let u = m.users;
    let c = build(&m, 4096);
    let mnt = m.mnt.display().to_string();
    let store = m.store.display().to_string();
    assert_healthy(&doctor_as(&u.b, &mnt), "member, fresh");

    // xet/logs made read-only on disk: through the mount the group cannot create there.
    fs::set_permissions(m.s("xet/logs"), fs::Permissions::from_mode(0o555)).unwrap();
    let o = doctor_as(&u.b, &mnt);
    let f = finding(&o, "[FAIL] xet");
    assert!(
        f.contains("1 directories in xet/ you cannot create files in")
            && f.contains("xet/logs (group")
            && f.contains(&format!(
                "ask an administrator to run: hfcachefs fix-store {store}"
            )),
        "{}",
        out_str(&o)
    );
    // Owner-writable but root's group and no setgid: the mount shows it writable (members
    // can create), the store is not as the policy wants; root sees it.
    fs::set_permissions(m.s("xet/logs"), fs::Permissions::from_mode(0o755)).unwrap();
    lchown(&m.s("xet/logs"), 0, 0).unwrap();
    assert_healthy(&doctor_as(&u.b, &mnt), "member: creating in xet/logs works");
    let o = hf_root(&["doctor", &mnt]);
    let f = finding(&o, "[FAIL] xet");
    assert!(
        f.contains("xet/logs (group 0, mode 0755)")
            && f.contains(&format!("fix: hfcachefs fix-store {store}")),
        "{}",
        out_str(&o)
    );

    // Payload modes off the policy: writable, or readable by others under others=none;
    // .refs not group-writable; a shard directory 0755.
    let big = format!("hub/blobs/0b/{}", c.big.0);
    let small = format!("hub/blobs/5a/{}", c.small.0);
    fs::set_permissions(m.s(&big), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(m.s(&small), fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(
        m.s(&format!("{small}.refs")),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::set_permissions(m.s("hub/blobs/5a"), fs::Permissions::from_mode(0o755)).unwrap();
    let o = hf_root(&["fix-store", &store, "--dry-run"]);
    let t = text(&o);
    assert!(
        t.contains(&format!("would fix {big}: mode 0644 -> 0440")),
        "{t}"
    );
    assert!(
        t.contains(&format!("would fix {small}: mode 0444 -> 0440")),
        "{t}"
    );
    assert!(
        t.contains(&format!("would fix {small}.refs: mode 0644 -> 0660")),
        "{t}"
    );
    assert!(t.contains("would fix xet/logs: group 0 -> "), "{t}");
    let o = hf_root(&["fix-store", &store]);
    assert!(o.status.success(), "{}", out_str(&o));
    assert_store(&m, &big, u.a.uid, u.gid, 0o440);
    assert_store(&m, &small, u.a.uid, u.gid, 0o440);
    assert_store(&m, &format!("{small}.refs"), u.a.uid, u.gid, 0o660);
    assert_store(&m, "hub/blobs/5a", u.a.uid, u.gid, 0o2770);
    assert_store(&m, "xet/logs", 0, u.gid, 0o2770);
    // Through the mount the payload stays readable and read-only for the group.
    let st = m.mst(&big);
    assert_eq!(st.perm(), 0o440);
    sh_as_ok(&u.b, 0o077, &format!("cat '{mnt}/{big}' > /dev/null"));
    let o = sh_as(&u.b, 0o077, &format!("echo x >> '{mnt}/{big}'"));
    assert!(
        !o.status.success(),
        "a member wrote to a payload\n{}",
        out_str(&o)
    );
    assert_healthy(&hf_root(&["doctor", &mnt]), "root, after fix-store");
    let o = hf_root(&["fix-store", &store]);
    assert!(text(&o).contains(", 0 fixed, 0 failed"), "{}", out_str(&o));
}
