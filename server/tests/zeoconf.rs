//! `zeo-server -C zeo.conf` as an operator switching from runzeo runs it: the real binary on
//! zeo.conf files in the shapes plone.recipe.zeoserver and the plone-zeo image write, a real
//! Python `ClientStorage` committing an object and a blob through it, and one refusal per class
//! of setting zeo-server does not honour (issue 14).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Generous: the machine running the tests may be busy.
const LIMIT: Duration = Duration::from_secs(60);

fn python() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = std::env::var_os("ZEORS_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo.join(".venv/bin/python"));
    assert!(python.exists(), "{} not found: run scripts/setup-venv or set ZEORS_PYTHON", python.display());
    python
}

/// Commits an object and a blob through one ClientStorage, then reads both back through a second
/// one with its own blob cache (so the blob really comes from the server's blob directory).
const CLIENT: &str = r#"
import sys, transaction, ZODB
from ZEO.ClientStorage import ClientStorage
from ZODB.blob import Blob
host, port, cache = sys.argv[1], int(sys.argv[2]), sys.argv[3]
db = ZODB.DB(ClientStorage((host, port), blob_dir=cache + "/a", wait_timeout=60))
conn = db.open()
root = conn.root()
root["title"] = "Plone site"
blob = Blob()
with blob.open("w") as f:
    f.write(b"image bytes")
root["image"] = blob
transaction.commit()
db.close()
db = ZODB.DB(ClientStorage((host, port), blob_dir=cache + "/b", wait_timeout=60))
root = db.open().root()
with root["image"].open() as f:
    data = f.read()
assert root["title"] == "Plone site", root["title"]
assert data == b"image bytes", data
db.close()
print("committed and read back")
"#;

struct Running {
    child: Child,
    listen: String,
    stderr: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts zeo-server with `args`, `env`, and a ready file in `dir`; waits for the ready file.
fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    let ready = dir.join("ready.json");
    let stderr = dir.join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_zeo-server"))
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut running = Running { child, listen: String::new(), stderr };
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            running.listen = doc["listen"].as_str().unwrap().to_owned();
            return running;
        }
        let exited = running.child.try_wait().unwrap();
        assert!(
            exited.is_none() && started.elapsed() < LIMIT,
            "zeo-server did not start ({exited:?}): {}",
            std::fs::read_to_string(&running.stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn commit_through(server: &Running, dir: &Path) {
    let (host, port) = server.listen.rsplit_once(':').unwrap();
    let out = Command::new(python()).arg("-c").arg(CLIENT).arg(host).arg(port).arg(dir.join("cache")).output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("committed and read back"),
        "client: {}{}\nserver: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&server.stderr).unwrap_or_default()
    );
}

/// SIGTERM, then the exit status.
fn stop(mut server: Running) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < LIMIT, "zeo-server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn blob_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += blob_files(&e.path());
        } else if e.path().extension().is_some_and(|x| x == "blob") {
            n += 1;
        }
    }
    n
}

/// plone.recipe.zeoserver's template: `%define INSTANCE`, a `<blobstorage 1>` around a
/// `<filestorage 1>`, an `<eventlog>` with a `<logfile>`, a `<runner>`. The address is the
/// loopback (the recipe writes a port only, which means every interface).
#[test]
fn plone_recipe_zeo_conf_serves_a_python_client() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    for d in ["var/filestorage", "var/blobstorage", "var/log", "parts/zeoserver/bin"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    let b = base.display();
    let conf = base.join("parts/zeoserver/zeo.conf");
    std::fs::write(
        &conf,
        format!(
            "%define INSTANCE {b}/parts/zeoserver

<zeo>
  address 127.0.0.1:0
  read-only false
  invalidation-queue-size 100
  pid-filename {b}/var/zeoserver.pid
  
  
</zeo>

<blobstorage 1>
  blob-dir {b}/var/blobstorage
  <filestorage 1>
    path {b}/var/filestorage/Data.fs
  </filestorage>
</blobstorage>

<eventlog>
  level info
  <logfile>
      path {b}/var/log/zeoserver.log
      format %(asctime)s %(message)s
    </logfile>
</eventlog>

<runner>
  program $INSTANCE/bin/runzeo
  socket-name {b}/var/zeoserver.zdsock
  daemon true
  forever false
  backoff-limit 10
  exit-codes 0, 2
  directory $INSTANCE
  default-to-interactive true

  # This logfile should match the one in the zeo.conf file.
  # It is used by zdctl's logtail command, zdrun/zdctl doesn't write it.
  logfile {b}/var/log/zeoserver.log
</runner>
"
        ),
    )
    .unwrap();
    let server = start(base, &["-C", conf.to_str().unwrap()], &[]);
    let pid = std::fs::read_to_string(base.join("var/zeoserver.pid")).unwrap();
    assert_eq!(pid.trim(), server.child.id().to_string());
    commit_through(&server, base);
    assert_eq!(blob_files(&base.join("var/blobstorage")), 1, "the blob is in the server's blob-dir");
    assert!(stop(server).success());
    assert!(!base.join("var/zeoserver.pid").exists(), "a clean exit removes the pid file");
    let log = std::fs::read_to_string(base.join("var/log/zeoserver.log")).unwrap();
    assert!(log.contains("<runner> ignored") && log.contains("format ignored"), "{log}");
    assert!(log.contains("listening") && log.contains("stopped"), "{log}");
}

/// The plone-zeo image's etc/zeo.conf: `$(ENV)` values filled by its start script, `%define`
/// directories, `pack-keep-old`, a `<logfile>` with a format, a `<runner>`. Flags override the
/// file: `--invalidation-queue-size` wins over the file's.
#[test]
fn plone_zeo_image_conf_with_environment_values() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    for d in ["data/filestorage", "data/blobstorage", "data/log", "app/var"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    let b = base.display();
    let conf = base.join("zeo.conf");
    std::fs::write(
        &conf,
        format!(
            "%define INSTANCE {b}/app
%define DATA_DIR {b}/data

<zeo>
  address 127.0.0.1:$(ZEO_PORT)
  read-only $(ZEO_READ_ONLY)
  invalidation-queue-size $(ZEO_INVALIDATION_QUEUE_SIZE)
  pid-filename $INSTANCE/var/zeo.pid
</zeo>

<filestorage 1>
  path $DATA_DIR/filestorage/Data.fs
  blob-dir $DATA_DIR/blobstorage
  pack-keep-old $(ZEO_PACK_KEEP_OLD)
</filestorage>

<eventlog>
  level info
  <logfile>
      path $DATA_DIR/log/zeo.log
      format %(asctime)s %(message)s
    </logfile>
</eventlog>

<runner>
  program $INSTANCE/bin/runzeo
  socket-name $INSTANCE/var/zeo.zdsock
  daemon true
  logfile $DATA_DIR/log/zeo.log
</runner>
"
        ),
    )
    .unwrap();
    let env = [
        ("ZEO_PORT", "0"),
        ("ZEO_READ_ONLY", "false"),
        ("ZEO_INVALIDATION_QUEUE_SIZE", "100"),
        ("ZEO_PACK_KEEP_OLD", "true"),
    ];
    let server = start(base, &["-C", conf.to_str().unwrap(), "--invalidation-queue-size", "250"], &env);
    assert!(base.join("app/var/zeo.pid").exists());
    commit_through(&server, base);
    assert_eq!(blob_files(&base.join("data/blobstorage")), 1);
    assert!(stop(server).success());
    let log = std::fs::read_to_string(base.join("data/log/zeo.log")).unwrap();
    assert!(log.contains("invalidation-queue-size=250"), "the flag overrides the file: {log}");
}

fn run_with(dir: &Path, conf: &str, env: &[(&str, &str)]) -> Output {
    let file = dir.join("zeo.conf");
    std::fs::write(&file, conf).unwrap();
    Command::new(env!("CARGO_BIN_EXE_zeo-server"))
        .arg("-C")
        .arg(&file)
        .env_remove("ZEO_PORT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// One refusal per class, each exit 64 with one line naming the file, the line and the key, and
/// nothing bound or opened.
#[test]
fn unsupported_settings_exit_64_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let zeo = "<zeo>\n  address 127.0.0.1:0\n</zeo>\n";
    let cases: Vec<(String, String)> = vec![
        // A key zeo-server does not implement.
        (
            "<zeo>\n  address 127.0.0.1:0\n  invalidation-age 3600\n</zeo>\n".into(),
            ":3: invalidation-age (in <zeo>) is not supported".into(),
        ),
        // A value zeo-server does not implement.
        (
            format!("{zeo}<filestorage 1>\n  path {d}/Data.fs\n  pack-gc false\n</filestorage>\n"),
            ":6: pack-gc false is not supported".into(),
        ),
        (
            format!("{zeo}<filestorage 1>\n  path {d}/Data.fs\n  quota 10GB\n</filestorage>\n"),
            ":6: quota (in <filestorage>) is not supported".into(),
        ),
        // A storage type zeo-server does not serve.
        (format!("{zeo}<zlibstorage 1>\n</zlibstorage>\n"), ":4: <zlibstorage> is not supported".into()),
        // A Unix socket address.
        (
            "<zeo>\n  address /var/run/zeo.sock\n</zeo>\n".into(),
            ":2: address: \"/var/run/zeo.sock\" is a Unix socket path".into(),
        ),
        // A key ZEO itself does not know.
        (
            format!("{zeo}<filestorage 1>\n  path {d}/Data.fs\n  colour blue\n</filestorage>\n"),
            ":6: unknown or unsupported key colour".into(),
        ),
        // Substitution of an undefined name, and a syntax error.
        (format!("{zeo}<filestorage 1>\n  path $DATA/Data.fs\n</filestorage>\n"), ":5: $DATA is not defined".into()),
        (format!("{zeo}<filestorage 1>\n  path {d}/Data.fs\n"), ":5: unclosed section <filestorage>".into()),
        ("%import tempstorage\n".into(), ":1: %import tempstorage: zeo-server cannot load".into()),
    ];
    for (conf, expected) in cases {
        let out = run_with(dir.path(), &conf, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = format!("zeo-server: {}{expected}", dir.path().join("zeo.conf").display());
        assert_eq!(out.status.code(), Some(64), "{conf}\n{stderr}");
        assert!(stderr.starts_with(&want) && stderr.lines().count() == 1, "{conf}\ngot: {stderr}\nwanted: {want}");
    }
    assert!(!dir.path().join("Data.fs").exists(), "a refused file opens no storage");
}
